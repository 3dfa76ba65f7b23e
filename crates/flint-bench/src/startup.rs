//! `flint bench startup`: the orchestration. Checks the inputs, prepares the guest once, runs
//! the systems round-robin, checks that every run did the same thing, and writes the report.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::value_parser;

use super::environment::{iso8601_utc, Environment};
use super::measure;
use super::report::{self, MemoryRecord, Report, RunRecord, SystemReport, Workload};
use super::run::{self, Measure, MemoryKind, MemorySample, Outcome, RunError, WaitStatus};
use super::system::{self, display_name, CrunContainer, Selection, Setup, System, VmFiles};
use super::{interrupt, quoted, svg, BenchError, Mismatch};

/// Compare a microVM with a container for the same workload: one OCI bundle runs N times each on
/// flint (restoring its warm snapshot, and booting cold), crun and QEMU's microvm, interleaved
/// round-robin (and, when asked for, on flint with its rootfs shared live over virtio-fs).
///
/// Per system it reports the time from launch to the workload's first byte on stdout and to its
/// exit (min / median / p95), host CPU time, peak RSS, memory at the first output (the VMM's
/// own and the guest's, or crun's and the container's), and disk (shared by all instances, and
/// per instance). Every run must exit with the same status and print the same stdout. Writes
/// startup.json, startup.md and startup.svg to --out and prints the Markdown table.
#[derive(clap::Args, Debug, Clone)]
pub struct StartupArgs {
    /// The OCI bundle to run: a directory with config.json and its root filesystem. Its process
    /// must not ask for a terminal (the bench reads its stdout from a pipe).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// Runs per system. Each round runs every system once, in --systems order.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 10,
          value_parser = value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Directory for startup.json, startup.md and startup.svg (created if needed).
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub out: PathBuf,
    /// Guest kernel for flint and QEMU [default: $FLINT_KERNEL, else
    /// /usr/local/share/flint/vmlinux or /usr/share/flint/vmlinux].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The systems to compare, comma-separated; each round runs them in this order, and the
    /// report lists them so. `flint` stands for flint-restored,flint-cold. flint-restored's
    /// snapshot is made by one untimed run before round 1. flint-live (flint-cold with
    /// --live-root: the bundle's rootfs/ itself as the guest's root, shared over virtio-fs by a
    /// virtiofsd flint starts, no image) runs only when named, and needs virtiofsd.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "flint-restored,flint-cold,crun,qemu"
    )]
    pub systems: Vec<Selection>,
    /// Guest memory in MiB, for every VM.
    #[arg(long, value_name = "MIB", default_value_t = 128,
          value_parser = value_parser!(u64).range(1..))]
    pub memory: u64,
    /// vCPUs, for every VM.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = value_parser!(u32).range(1..))]
    pub cpus: u32,
    /// The QEMU binary (a path, or a name looked up on PATH).
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// The crun binary (a path, or a name looked up on PATH).
    #[arg(long, value_name = "PATH", default_value = "crun")]
    pub crun: PathBuf,
    /// Free text saying where this ran (e.g. "laptop, on battery"), added to the report's
    /// environment record.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Seconds one run may take; a run still going then is killed and the bench fails. The
    /// restored row's warm-up, which also makes flint's snapshot, gets 300 s more.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// The bench's scratch directory (flint's image cache, QEMU's initramfs), removed when dropped:
/// on success and on every error.
pub(crate) struct Workdir(pub(crate) PathBuf);

impl Workdir {
    pub(crate) fn create() -> Result<Workdir, BenchError> {
        let path = std::env::temp_dir().join(format!("flint-bench-{}", std::process::id()));
        // A leftover of an earlier bench that had our pid and was killed: ours to reuse.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .map_err(BenchError::io(format!("cannot create {}", path.display())))?;
        Ok(Workdir(path))
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The bundle, checked enough to give clear errors before anything runs.
pub(crate) struct Bundle {
    pub(crate) dir: PathBuf,
    pub(crate) rootfs: PathBuf,
}

pub(crate) fn check_bundle(dir: &Path) -> Result<Bundle, BenchError> {
    let err = |what: String| BenchError::Bundle {
        bundle: dir.display().to_string(),
        what,
    };
    let abs = std::fs::canonicalize(dir).map_err(|e| err(e.to_string()))?;
    let config = abs.join("config.json");
    let text = std::fs::read_to_string(&config)
        .map_err(|e| err(format!("cannot read config.json ({e}): not an OCI bundle?")))?;
    let spec: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("config.json: {e}")))?;
    // The bench reads the workload's stdout from a pipe; crun would need a console socket.
    if spec["process"]["terminal"].as_bool() == Some(true) {
        return Err(err(
            "process.terminal is true: the bench needs the workload's stdout as a pipe; set it \
             to false"
                .into(),
        ));
    }
    let root = spec["root"]["path"].as_str().unwrap_or("rootfs");
    let rootfs = abs.join(root);
    if !rootfs.is_dir() {
        return Err(err(format!(
            "its root.path {} is not a directory",
            rootfs.display()
        )));
    }
    Ok(Bundle { dir: abs, rootfs })
}

pub(crate) fn resolve_kernel(given: Option<&Path>) -> Result<PathBuf, BenchError> {
    let kernel = match given {
        Some(k) => k.to_path_buf(),
        None => flint_oci::default_kernel().ok_or_else(|| BenchError::NoKernel {
            looked: flint_oci::DEFAULT_KERNELS.join(", "),
        })?,
    };
    if !kernel.is_file() {
        return Err(BenchError::Kernel(kernel));
    }
    std::fs::canonicalize(&kernel).map_err(BenchError::io(format!("--kernel {}", kernel.display())))
}

pub(crate) fn tool(
    given: &Path,
    option: &'static str,
    install: &'static str,
) -> Result<PathBuf, BenchError> {
    system::find_program(given).ok_or_else(|| BenchError::ToolMissing {
        tool: given.display().to_string(),
        install,
        option,
    })
}

/// What one run produced, for the same-workload check.
struct Observed {
    system: &'static str,
    round: u32,
    status: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// The bench prepares bundles with their ext4 image (never a live root).
const NO_IMAGE: BenchError = BenchError::Internal {
    what: "the bundle was prepared without its root image",
};

fn check_same(reference: &Observed, run: &Observed) -> Result<(), BenchError> {
    if run.status == reference.status && run.stdout == reference.stdout {
        return Ok(());
    }
    Err(BenchError::Mismatch(Box::new(Mismatch {
        system: run.system,
        round: run.round,
        status: run.status,
        stdout: quoted(&run.stdout, 400),
        stderr: run.stderr.clone(),
        reference: reference.system,
        reference_status: reference.status,
        reference_stdout: quoted(&reference.stdout, 400),
        reference_stderr: reference.stderr.clone(),
    })))
}

/// The guest RAM mapping sizes each VMM will have for `mib` MiB.
pub(crate) fn guest_sizes(system: System, mib: u64) -> Vec<u64> {
    let bytes = mib << 20;
    match system {
        // flint splits RAM around the 32-bit MMIO hole, one mapping per range; a restored flint
        // maps its snapshot's memory file the same way, range by range.
        // A live root's RAM is one memfd (virtiofsd maps it too), mapped by the same ranges.
        System::FlintRestored | System::FlintCold | System::FlintLive => {
            flint_vmm::vstate::memory::ram_ranges(bytes)
                .into_iter()
                .map(|(_, len)| len)
                .collect()
        }
        // QEMU allocates all RAM as one block and maps pieces of it into the guest.
        _ => vec![bytes],
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs `system` once and turns the outcome into a record, or an error naming the run.
fn run_once(
    setup: &Setup,
    system: System,
    round: u32,
    timeout: Duration,
    crun_rundir: &Path,
) -> Result<(RunRecord, Observed, Vec<String>), BenchError> {
    let name = system.key();
    let cmd = setup.command(system, round)?;
    let command = system::describe(&cmd);
    let id = Setup::crun_id(round);
    // Deleted when this returns, however it returns.
    let _container = (system == System::Crun).then(|| CrunContainer {
        crun: &setup.crun,
        id: id.clone(),
    });
    let state_dir = crun_rundir.join(&id);
    let m = Measure {
        timeout,
        memory: match system {
            System::Crun => MemoryKind::Tree,
            // A live root's virtiofsd is flint's child: it is stopped with flint and its PSS
            // is summed apart (for the flint-live row), as crun's container is with crun.
            vm => MemoryKind::Vmm {
                guest_sizes: guest_sizes(vm, setup.memory_mib),
                helpers: vm == System::FlintLive,
            },
        },
        state_dir: (system == System::Crun).then_some(state_dir.as_path()),
    };
    let failed = |what: String, stderr: Vec<u8>| BenchError::Run {
        system: name,
        round,
        what,
        stderr,
    };
    let o: Outcome = run::run(cmd, &m).map_err(|e| {
        // The run error's cause (why spawning or reading failed) is part of what the user sees.
        let what = crate::with_causes(&e);
        match e {
            RunError::Interrupted(sig) => BenchError::Interrupted(sig),
            RunError::Timeout { stderr, .. } => failed(what, stderr),
            _ => failed(what, Vec::new()),
        }
    })?;
    let status = match (system, o.status) {
        (System::Qemu, s) => {
            system::qemu_workload_status(s).map_err(|why| failed(why, o.stderr.clone()))?
        }
        (_, WaitStatus::Exited(code)) => code,
        (_, WaitStatus::Signaled(s)) => {
            return Err(failed(format!("killed by signal {s}"), o.stderr.clone()))
        }
    };
    if system == System::Crun {
        let log = std::fs::read_to_string(setup.crun_log(round)).unwrap_or_default();
        let errors = system::crun_errors(&log);
        if !errors.is_empty() {
            return Err(failed(
                format!("crun failed ({}): {}", o.status, errors.join("; ")),
                o.stderr.clone(),
            ));
        }
    }
    // flint's own failures (the VM could not be built) exit 1 like a workload might: its
    // message tells them apart.
    let stderr_text = String::from_utf8_lossy(&o.stderr);
    if system.is_flint() && stderr_text.lines().any(|l| l.starts_with("flint: error:")) {
        return Err(failed(
            format!("flint failed ({})", o.status),
            o.stderr.clone(),
        ));
    }
    let memory_at_first_output = o.memory.as_ref().map(|s| match s {
        MemorySample::Vmm { split: v, helpers } => MemoryRecord::Vmm {
            total_rss_kib: v.total_rss_kib,
            total_pss_kib: v.total_pss_kib,
            vmm_rss_kib: v.guest.map(|g| g.vmm_rss_kib),
            vmm_pss_kib: v.guest.map(|g| g.vmm_pss_kib),
            guest_rss_kib: v.guest.map(|g| g.guest_rss_kib),
            virtiofsd_pss_kib: helpers.filter(|h| h.processes > 0).map(|h| h.pss_kib),
        },
        MemorySample::Tree {
            rss_kib,
            pss_kib,
            processes,
        } => MemoryRecord::Container {
            rss_kib: *rss_kib,
            pss_kib: *pss_kib,
            processes: *processes,
        },
    });
    let record = RunRecord {
        round,
        exit_status: status,
        first_output_us: o.first_output.map(micros),
        exit_us: micros(o.exit),
        paused_us: micros(o.paused),
        cpu_user_us: micros(o.cpu_user),
        cpu_sys_us: micros(o.cpu_sys),
        peak_rss_kib: o.peak_rss_kib,
        // A restored guest does not boot, so flint may not print the line: then `None`, which
        // the report shows as not applicable.
        boot_us: system
            .is_flint()
            .then(|| system::parse_boot_us(&o.stderr))
            .flatten(),
        memory_at_first_output,
        // The VMs' writable layer is a tmpfs in guest memory: nothing on the host's disk. A live
        // root's writes land in the bundle's rootfs/, as crun's do, and flint keeps no files
        // of its own for the instance: nothing either.
        disk_per_instance_bytes: match system {
            System::Crun => o.state_dir_bytes,
            _ => Some(0),
        },
    };
    let observed = Observed {
        system: name,
        round,
        status,
        stdout: o.stdout,
        stderr: o.stderr,
    };
    Ok((record, observed, command))
}

/// What the restored row's warm-up run left behind.
struct WarmUp {
    /// Its launch → exit: what a first use costs (a boot and the capture), for a note.
    exit_us: u64,
    /// The files under the cache's warm/ right after it (see [`snapshot_files`]); `None` if
    /// there was no such directory.
    files: Option<Vec<SnapshotFile>>,
    /// Their allocated bytes, shared by every restored run.
    bytes: u64,
}

/// One file of flint's warm snapshot: its path under warm/, length and modification time, to
/// tell whether a timed run replaced the snapshot instead of restoring it.
type SnapshotFile = (PathBuf, u64, Option<SystemTime>);

/// What the warm-up may take beyond a run's timeout: flint bounds making its snapshot (a boot
/// and a capture) at five minutes itself.
pub(crate) const WARM_UP_EXTRA: Duration = Duration::from_secs(300);

/// Runs the restored row once, untimed, so that flint makes its warm snapshot; a failure is
/// the bench's, on one line.
fn warm_up(setup: &Setup, timeout: Duration, crun_rundir: &Path) -> Result<WarmUp, BenchError> {
    let system = System::FlintRestored;
    let timeout = timeout.saturating_add(WARM_UP_EXTRA);
    // Round 0: before the first timed round (it names nothing but crun's files).
    let (record, _, _) = run_once(setup, system, 0, timeout, crun_rundir).map_err(|e| match e {
        BenchError::Run { what, stderr, .. } => BenchError::WarmUp {
            system: system.key(),
            what,
            stderr,
        },
        other => other,
    })?;
    let dir = system::warm_dir(&setup.image_cache);
    let files = snapshot_files(&dir);
    let bytes = if files.is_some() {
        measure::tree_allocated_bytes(&dir)
            .map_err(BenchError::io(format!("cannot measure {}", dir.display())))?
    } else {
        0
    };
    Ok(WarmUp {
        exit_us: record.exit_us,
        files,
        bytes,
    })
}

/// The files under `dir`, sorted, with their lengths and modification times; `None` if `dir`
/// cannot be read (it does not exist: flint made no snapshot there).
fn snapshot_files(dir: &Path) -> Option<Vec<SnapshotFile>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()? {
            let path = entry.ok()?.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
                files.push((rel, meta.len(), meta.modified().ok()));
            }
        }
    }
    files.sort();
    Some(files)
}

/// What a reader needs to know about the restored row: how its snapshot was made and what is
/// counted, whether its boot timer line appeared, and anything that casts doubt on its runs
/// being restores. `after` is the warm/ directory's files after the timed rounds.
fn restored_notes(
    warm: &WarmUp,
    after: Option<&[SnapshotFile]>,
    columns: &[Column],
    warm_dir: &Path,
) -> Vec<String> {
    let restored = display_name(System::FlintRestored.key());
    let mut notes = vec![format!(
        "{restored} is `flint run --oci-bundle` as it runs by default: it restores flint's \
         snapshot of the guest kernel and init booted to waiting for a workload, kept in the \
         image cache ({}). One untimed warm-up run before round 1 made that snapshot (it exited \
         after {:.1} ms) and is not in the results, so every timed run is a restore, with the \
         snapshot's files likely in the host's page cache. Its guest RAM is mapped from the \
         snapshot's memory file: guest RAM at the first output is what the restored guest has \
         touched. {} adds `--cold` and boots the kernel every time.",
        warm_dir.display(),
        warm.exit_us as f64 / 1e3,
        display_name(System::FlintCold.key()),
    )];
    match (&warm.files, after) {
        (None, _) => notes.push(format!(
            "No snapshot was found under {} after the warm-up: the {restored} runs may have \
             booted cold (compare them with a cold boot), and its shared disk counts only the \
             image and kernel.",
            warm_dir.display()
        )),
        (Some(before), after) if after != Some(before.as_slice()) => notes.push(format!(
            "The files under {} changed during the timed rounds: some {restored} runs may have \
             made a new snapshot instead of restoring the warm-up's.",
            warm_dir.display()
        )),
        (Some(before), _) => notes.push(format!(
            "{restored}'s shared disk also counts the snapshot's {} file(s) ({:.1} MiB \
             allocated).",
            before.len(),
            warm.bytes as f64 / (1024.0 * 1024.0)
        )),
    }
    if let Some(col) = columns.iter().find(|c| c.system == System::FlintRestored) {
        let timed = col.runs.iter().filter(|r| r.boot_us.is_some()).count();
        notes.push(if timed == 0 {
            format!(
                "A restored guest does not boot: flint printed no boot time for {restored} \
                 (shown as –)."
            )
        } else {
            format!(
                "flint printed a boot time for {timed} of the {} {restored} runs; its boot \
                 timer row summarises those (for a restore it is not a kernel boot).",
                col.runs.len()
            )
        });
    }
    notes
}

/// One system's results as they accumulate.
struct Column {
    system: System,
    command: Vec<String>,
    versions: String,
    disk_shared_bytes: u64,
    runs: Vec<RunRecord>,
}

/// Runs the benchmark: every selected system `--runs` times, round-robin; writes
/// startup.json, startup.md and startup.svg to `--out`, prints the Markdown on stdout (and one
/// progress line per round on stderr), and returns the report.
pub fn startup(args: &StartupArgs) -> Result<Report, BenchError> {
    let systems = system::selected(&args.systems);
    if systems.is_empty() {
        return Err(BenchError::Usage(
            "--systems: name at least one of flint-restored, flint-cold, flint-live, crun, qemu \
             (or flint for flint-restored and flint-cold)"
                .into(),
        ));
    }
    if args.runs == 0 || args.memory == 0 || args.cpus == 0 || args.timeout == 0 {
        return Err(BenchError::Usage(
            "--runs, --memory, --cpus and --timeout must be at least 1".into(),
        ));
    }
    if args.memory > (1 << 30) {
        return Err(BenchError::Usage(format!(
            "--memory {}: too large",
            args.memory
        )));
    }
    let has = |s: System| systems.contains(&s);
    let bundle = check_bundle(&args.bundle)?;
    // From here until the end, Ctrl-C stops the bench through its cleanup.
    let _signals = interrupt::Catch::install();
    let needs_vm = systems.iter().any(|s| s.is_vm());
    let kernel = if needs_vm {
        Some(resolve_kernel(args.kernel.as_deref())?)
    } else {
        None
    };
    let flint = if systems.iter().any(|s| s.is_flint()) {
        std::env::current_exe().map_err(BenchError::io("cannot find flint's own executable"))?
    } else {
        PathBuf::from("flint")
    };
    let crun = if has(System::Crun) {
        tool(&args.crun, "--crun", "apt-get install crun")?
    } else {
        args.crun.clone()
    };
    let qemu = if has(System::Qemu) {
        tool(&args.qemu, "--qemu", "apt-get install qemu-system-x86")?
    } else {
        args.qemu.clone()
    };
    // Found as flint finds it (same function, same environment), for an early error and the
    // report's versions.
    let virtiofsd = if has(System::FlintLive) {
        Some(
            flint_vmm::devices::virtio::fs::virtiofsd::find().map_err(|_| {
                BenchError::Usage(format!(
                    "flint-live needs virtiofsd (flint starts one per run for --live-root): none \
                     on $PATH or in {}; install it (`cargo install virtiofsd`, or \
                     resources/guest/build-virtiofsd.sh) or set FLINT_VIRTIOFSD=PATH",
                    flint_vmm::devices::virtio::fs::virtiofsd::KNOWN_PATHS.join(", ")
                ))
            })?,
        )
    } else {
        None
    };

    let environment = Environment::detect(args.label.clone());
    let date = iso8601_utc(SystemTime::now());
    let workdir = Workdir::create()?;
    let image_cache = workdir.0.join("images");
    let mut notes = Vec::new();

    // The image is built here, once, into the cache flint will use too: no run pays for it. A
    // live root has none.
    let plan = if systems.iter().any(|s| s.uses_image()) {
        Some(flint_oci::prepare(&bundle.dir, &image_cache)?)
    } else {
        None
    };
    let vm = match &plan {
        Some(plan) if has(System::Qemu) => {
            let initramfs = workdir.0.join("initramfs.cpio");
            std::fs::write(&initramfs, plan.initramfs()?).map_err(BenchError::io(format!(
                "cannot write {}",
                initramfs.display()
            )))?;
            Some(VmFiles {
                image: plan.image.clone().ok_or(NO_IMAGE)?,
                initramfs,
                kernel_args: plan.kernel_args.clone(),
            })
        }
        _ => None,
    };
    let crun_rundir = if has(System::Crun) {
        if let Some(note) = system::ensure_cgroup2()? {
            notes.push(note);
        }
        system::crun_rundir(&crun)
    } else {
        PathBuf::new()
    };

    let kernel_disk = match &kernel {
        Some(kernel) => measure::allocated_bytes(kernel)
            .map_err(BenchError::io(format!("{}", kernel.display())))?,
        None => 0,
    };
    let image_disk = match &plan {
        Some(plan) => {
            let path = plan.image.as_ref().ok_or(NO_IMAGE)?;
            measure::allocated_bytes(path).map_err(BenchError::io(format!("{}", path.display())))?
        }
        None => 0,
    };
    let vm_disk = image_disk + kernel_disk;
    let flint_version = format!("flint {}", env!("CARGO_PKG_VERSION"));
    let mut columns = Vec::new();
    for &system in &systems {
        let (versions, disk_shared_bytes) = match system {
            // The restored row's snapshot files are added once the warm-up has made them.
            System::FlintRestored | System::FlintCold => (flint_version.clone(), vm_disk),
            // No image: the rootfs/ is the bundle itself, shared as it is.
            System::FlintLive => (
                match &virtiofsd {
                    Some(v) => format!(
                        "{flint_version}; {} ({})",
                        system::version(v, 1),
                        v.display()
                    ),
                    None => flint_version.clone(),
                },
                kernel_disk,
            ),
            System::Qemu => (system::version(&qemu, 1), vm_disk),
            System::Crun => (
                system::version(&crun, 2),
                measure::tree_allocated_bytes(&bundle.rootfs).map_err(BenchError::io(format!(
                    "cannot measure {}",
                    bundle.rootfs.display()
                )))?,
            ),
        };
        columns.push(Column {
            system,
            command: Vec::new(),
            versions,
            disk_shared_bytes,
            runs: Vec::new(),
        });
    }

    let setup = Setup {
        bundle: bundle.dir.clone(),
        memory_mib: args.memory,
        cpus: args.cpus,
        flint,
        crun,
        qemu,
        kernel: kernel.clone(),
        image_cache,
        crun_logs: workdir.0.clone(),
        vm,
    };
    let timeout = Duration::from_secs(args.timeout);
    // The restored row's first run would make the snapshot it restores (a boot and a capture):
    // that run is done here, untimed and left out of the results, so every timed run restores.
    let warm = if has(System::FlintRestored) {
        let warm = warm_up(&setup, timeout, &crun_rundir)?;
        eprintln!(
            "flint bench startup: warm-up: {} exited after {:.1} ms (not counted){}",
            System::FlintRestored.key(),
            warm.exit_us as f64 / 1e3,
            if warm.files.is_some() {
                ""
            } else {
                "; no snapshot found under the cache's warm/"
            }
        );
        for col in &mut columns {
            if col.system == System::FlintRestored {
                col.disk_shared_bytes += warm.bytes;
            }
        }
        Some(warm)
    } else {
        None
    };
    // Every run is checked against the first crun run (or the first system's first run):
    // the systems must run the same workload for the comparison to mean anything.
    let reference_system = if has(System::Crun) {
        System::Crun
    } else {
        systems[0]
    };
    let mut reference: Option<Observed> = None;
    let mut pending: Vec<Observed> = Vec::new();
    for round in 1..=args.runs {
        let mut progress = Vec::new();
        for col in &mut columns {
            if let Some(sig) = interrupt::pending() {
                return Err(BenchError::Interrupted(sig));
            }
            let (record, observed, command) =
                run_once(&setup, col.system, round, timeout, &crun_rundir)?;
            match &reference {
                Some(r) => check_same(r, &observed)?,
                None if col.system == reference_system => {
                    for p in pending.drain(..) {
                        check_same(&observed, &p)?;
                    }
                    reference = Some(observed);
                }
                None => pending.push(observed),
            }
            progress.push(format!(
                "{} {:.1} ms",
                col.system.key(),
                record.exit_us as f64 / 1e3
            ));
            if col.command.is_empty() {
                col.command = command;
            }
            col.runs.push(record);
        }
        eprintln!(
            "flint bench startup: round {round}/{}: exit after {}",
            args.runs,
            progress.join(", ")
        );
    }
    let Some(reference) = reference else {
        return Err(BenchError::Internal {
            what: "no reference run",
        });
    };

    notes.extend(standard_notes(&systems, &columns, &crun_rundir, &setup));
    if let Some(warm) = &warm {
        let after = snapshot_files(&system::warm_dir(&setup.image_cache));
        notes.extend(restored_notes(
            warm,
            after.as_deref(),
            &columns,
            &system::warm_dir(&setup.image_cache),
        ));
    }
    if reference.stdout.is_empty() {
        notes.push(
            "The workload wrote nothing on stdout: there are no first-output times and no \
             memory snapshots."
                .into(),
        );
    }
    let report = Report {
        benchmark: "startup".into(),
        flint_version: env!("CARGO_PKG_VERSION").into(),
        date,
        environment,
        bundle: bundle.dir.display().to_string(),
        kernel: kernel.map(|k| k.display().to_string()),
        runs: args.runs,
        memory_mib: args.memory,
        cpus: args.cpus,
        timeout_s: args.timeout,
        workload: Workload::new(reference.status, &reference.stdout),
        systems: columns
            .into_iter()
            .map(|c| {
                let stats = report::stats_of(&c.runs);
                (
                    c.system.key().to_string(),
                    SystemReport {
                        command: c.command,
                        versions: c.versions,
                        disk_shared_bytes: c.disk_shared_bytes,
                        stats,
                        runs: c.runs,
                    },
                )
            })
            .collect(),
        notes,
    };
    let markdown = report::markdown(&report);
    write_outputs("startup", &report, &markdown, &svg::svg(&report), &args.out)?;
    print!("{markdown}");
    drop(workdir);
    Ok(report)
}

/// What every reader of the report needs to know about how the numbers were taken.
fn standard_notes(
    systems: &[System],
    columns: &[Column],
    crun_rundir: &Path,
    setup: &Setup,
) -> Vec<String> {
    let order: Vec<&str> = systems.iter().map(|s| s.key()).collect();
    let mut notes = vec![
        format!(
            "Each round ran every system once, in the order {}. Times run from the launch \
             (just before the spawn) to the first byte read from the workload's stdout, and to \
             the exit.",
            order.join(", ")
        ),
        "At the first output the bench stopped the process tree (SIGSTOP), read \
         /proc/PID/smaps (Rss, Pss) and continued it (SIGCONT); the time it was stopped \
         (paused_us) is subtracted from the exit time. A run that had exited by then has no \
         memory snapshot."
            .into(),
        "Host CPU is user + sys from wait4's rusage, which includes the children the process \
         reaped (crun's container process); peak RSS is ru_maxrss, the largest single process \
         among them."
            .into(),
    ];
    let live = display_name(System::FlintLive.key());
    let images = systems.iter().any(|s| s.uses_image());
    if systems.iter().any(|s| s.is_vm()) {
        let mut vm = String::new();
        if images {
            vm.push_str(
                "flint and QEMU use the same kernel, root image and initramfs, prepared once \
                 before the first round (so no run includes building the image). ",
            );
        }
        vm.push_str(
            "Guest RAM is the VMM's mappings of the guest memory's size; the VMM's own memory is \
             the rest of its process.",
        );
        notes.push(vm);
        let mut disk = String::from("Disk:");
        if images {
            disk.push_str(
                " the VMs share the read-only ext4 image and the kernel; the guest's writable \
                 layer is a tmpfs in guest memory, so an instance writes nothing to the host's \
                 disk.",
            );
        }
        if systems.contains(&System::FlintLive) {
            disk.push_str(&format!(
                " {live} has no image: it shares the kernel alone. Its guest's root is the \
                 bundle's rootfs/ itself, where the workload's writes land as they do with crun; \
                 that tree is the bundle, not a copy, and is not counted in its row."
            ));
        }
        if systems.contains(&System::FlintRestored) {
            disk.push_str(&format!(
                " {} also shares its snapshot's files.",
                display_name(System::FlintRestored.key())
            ));
        }
        if let Some(vm) = &setup.vm {
            if let Ok(b) = measure::allocated_bytes(&vm.initramfs) {
                disk.push_str(&format!(
                    " QEMU's initramfs file ({} KiB) is not counted: flint builds it in memory.",
                    b / 1024
                ));
            }
        }
        notes.push(disk);
    }
    if systems.contains(&System::FlintLive) {
        notes.push(format!(
            "{live} is {cold}'s command with `--live-root`: the guest's root is the bundle's \
             rootfs/ directory shared over virtio-fs by a virtiofsd that flint starts and stops \
             in every run, and the guest boots cold (a VM with a share has no warm start). \
             virtiofsd is a separate process, flint's child: stopped and read with flint at the \
             first output, its PSS (without its mapping of the guest RAM, whose pages are \
             counted as guest RAM) is added to {live}'s PSS row and is in the JSON apart as \
             virtiofsd_pss_kib. Host CPU and peak RSS include it too (flint reaps it).",
            cold = display_name(System::FlintCold.key()),
        ));
        let live_runs = columns
            .iter()
            .filter(|c| c.system == System::FlintLive)
            .flat_map(|c| &c.runs);
        let missing = live_runs
            .filter(|r| {
                matches!(
                    r.memory_at_first_output,
                    Some(MemoryRecord::Vmm {
                        virtiofsd_pss_kib: None,
                        ..
                    })
                )
            })
            .count();
        if missing > 0 {
            notes.push(format!(
                "In {missing} {live} run(s) no virtiofsd was found among flint's descendants at \
                 the first output: they have no virtiofsd_pss_kib, and its PSS row leaves them \
                 out (or shows flint's own PSS if no run has one)."
            ));
        }
    }
    if systems.contains(&System::Qemu) {
        notes.push(
            "QEMU reports the guest's exit status through isa-debug-exit as (status << 1) | 1; \
             the status shown is the decoded one."
                .into(),
        );
    }
    if systems.contains(&System::Crun) {
        notes.push(format!(
            "crun writes the container's changes straight into the bundle's rootfs (there is \
             no copy-on-write layer): its shared disk is the rootfs tree (each inode once), and \
             its disk per instance is its state directory ({}/ID) at the first output.",
            crun_rundir.display()
        ));
    }
    let unsplit = columns
        .iter()
        .flat_map(|c| &c.runs)
        .filter(|r| {
            matches!(
                r.memory_at_first_output,
                Some(MemoryRecord::Vmm {
                    guest_rss_kib: None,
                    ..
                })
            )
        })
        .count();
    if unsplit > 0 {
        notes.push(format!(
            "In {unsplit} run(s) no mapping of the guest memory's size was found in the VMM's \
             smaps (the kernel merged it with a neighbouring mapping, or the VMM was started \
             through a wrapper): those runs have totals but no VMM/guest split."
        ));
    }
    notes
}

/// Writes `<bench>.json`, `<bench>.md` and `<bench>.svg` into `out` (made if missing).
pub(crate) fn write_outputs(
    bench: &str,
    report: &impl serde::Serialize,
    markdown: &str,
    svg: &str,
    out: &Path,
) -> Result<(), BenchError> {
    std::fs::create_dir_all(out)
        .map_err(BenchError::io(format!("cannot create {}", out.display())))?;
    let json = serde_json::to_string_pretty(report).map_err(|e| BenchError::Io {
        what: "cannot serialise the report".into(),
        source: e.into(),
    })?;
    for (ext, text) in [
        ("json", json + "\n"),
        ("md", markdown.to_string()),
        ("svg", svg.to_string()),
    ] {
        let path = out.join(format!("{bench}.{ext}"));
        std::fs::write(&path, text)
            .map_err(BenchError::io(format!("cannot write {}", path.display())))?;
        eprintln!("flint bench {bench}: wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<StartupArgs, clap::Error> {
        crate::parse_args(args)
    }

    #[test]
    fn defaults_and_lists() {
        let a = parse(&["--bundle", "b"]).unwrap();
        assert_eq!(a.runs, 10);
        // Restored first: it is what `flint run --oci-bundle` does by default.
        assert_eq!(
            system::selected(&a.systems),
            [
                System::FlintRestored,
                System::FlintCold,
                System::Crun,
                System::Qemu
            ]
        );
        assert_eq!((a.memory, a.cpus, a.timeout), (128, 1, 60));
        assert_eq!(a.out, PathBuf::from("results"));
        let a = parse(&["--bundle", "b", "-n", "3", "--systems", "qemu,crun"]).unwrap();
        assert_eq!(a.runs, 3);
        assert_eq!(system::selected(&a.systems), [System::Qemu, System::Crun]);
        let a = parse(&["--bundle", "b", "--systems", "crun,flint"]).unwrap();
        assert_eq!(
            system::selected(&a.systems),
            [System::Crun, System::FlintRestored, System::FlintCold]
        );
        let a = parse(&["--bundle", "b", "--systems", "flint-cold,qemu"]).unwrap();
        assert_eq!(
            system::selected(&a.systems),
            [System::FlintCold, System::Qemu]
        );
        // The live root only when named, in the order given; `flint` does not include it.
        let a = parse(&["--bundle", "b", "--systems", "flint,flint-live,crun"]).unwrap();
        assert_eq!(
            system::selected(&a.systems),
            [
                System::FlintRestored,
                System::FlintCold,
                System::FlintLive,
                System::Crun
            ]
        );
        let a = parse(&["--bundle", "b", "--systems", "flint-live"]).unwrap();
        assert_eq!(system::selected(&a.systems), [System::FlintLive]);
        assert!(parse(&["--bundle", "b", "--systems", "live"]).is_err());
        assert!(parse(&["--bundle", "b", "-n", "0"]).is_err());
        assert!(parse(&["--bundle", "b", "--systems", "docker"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn guest_sizes_follow_each_vmm_layout() {
        assert_eq!(guest_sizes(System::Qemu, 128), [128 << 20]);
        for flint in [System::FlintRestored, System::FlintCold, System::FlintLive] {
            assert_eq!(guest_sizes(flint, 128), [128 << 20]);
            assert_eq!(guest_sizes(flint, 4096), [3 << 30, 1 << 30]);
        }
        assert_eq!(guest_sizes(System::Qemu, 4096), [4 << 30]);
    }

    fn observed(system: &'static str, status: i32, stdout: &[u8]) -> Observed {
        Observed {
            system,
            round: 1,
            status,
            stdout: stdout.to_vec(),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn runs_must_match_the_reference() {
        let r = observed("crun", 0, b"hi\n");
        assert!(check_same(&r, &observed("flint", 0, b"hi\n")).is_ok());
        assert!(matches!(
            check_same(&r, &observed("flint", 1, b"hi\n")),
            Err(BenchError::Mismatch(m)) if m.status == 1
        ));
        assert!(check_same(&r, &observed("qemu", 0, b"hi\r\n")).is_err());
    }

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("flint-bench-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn bundles_are_checked() {
        let d = scratch("bundle");
        let e = check_bundle(&d).err().unwrap().to_string();
        assert!(e.contains("not an OCI bundle"), "{e}");
        std::fs::write(d.join("config.json"), r#"{"root": {"path": "fs"}}"#).unwrap();
        let e = check_bundle(&d).err().unwrap().to_string();
        assert!(e.contains("is not a directory"), "{e}");
        std::fs::create_dir(d.join("fs")).unwrap();
        let b = check_bundle(&d).unwrap();
        assert!(b.rootfs.ends_with("fs") && b.rootfs.is_absolute());
        std::fs::write(
            d.join("config.json"),
            r#"{"process": {"terminal": true}, "root": {"path": "fs"}}"#,
        )
        .unwrap();
        let e = check_bundle(&d).err().unwrap().to_string();
        assert!(e.contains("terminal"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_tools_and_kernels_say_what_to_do() {
        let e = tool(Path::new("no-such-crun"), "--crun", "apt-get install crun")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "no-such-crun not found: install it (apt-get install crun) or pass --crun PATH"
        );
        let e = resolve_kernel(Some(Path::new("/nonexistent/vmlinux")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--kernel /nonexistent/vmlinux: not a file");
    }

    #[test]
    fn the_workdir_is_removed_when_dropped() {
        let w = Workdir::create().unwrap();
        let p = w.0.clone();
        std::fs::write(p.join("x"), b"x").unwrap();
        drop(w);
        assert!(!p.exists());
    }

    fn record(round: u32, boot_us: Option<u64>) -> RunRecord {
        RunRecord {
            round,
            exit_status: 0,
            first_output_us: Some(1000),
            exit_us: 2000,
            paused_us: 0,
            cpu_user_us: 0,
            cpu_sys_us: 0,
            peak_rss_kib: 0,
            boot_us,
            memory_at_first_output: None,
            disk_per_instance_bytes: Some(0),
        }
    }

    fn restored_column(boot_us: &[Option<u64>]) -> Column {
        Column {
            system: System::FlintRestored,
            command: Vec::new(),
            versions: String::new(),
            disk_shared_bytes: 0,
            runs: (1..).zip(boot_us).map(|(i, b)| record(i, *b)).collect(),
        }
    }

    fn warm(files: Option<Vec<SnapshotFile>>) -> WarmUp {
        WarmUp {
            exit_us: 1_234_500,
            files,
            bytes: 3 << 20,
        }
    }

    #[test]
    fn the_restored_row_says_how_its_snapshot_was_made() {
        let dir = Path::new("/w/images/warm");
        let files = vec![(PathBuf::from("abc/mem"), 128 << 20, None)];
        let w = warm(Some(files.clone()));
        let notes = restored_notes(&w, Some(&files), &[restored_column(&[None, None])], dir);
        assert!(notes[0].starts_with("flint (restored) is `flint run --oci-bundle`"));
        assert!(notes[0].contains("(/w/images/warm)"));
        assert!(notes[0].contains("exited after 1234.5 ms) and is not in the results"));
        assert!(notes[0].contains("flint (cold boot) adds `--cold`"));
        assert_eq!(
            notes[1],
            "flint (restored)'s shared disk also counts the snapshot's 1 file(s) (3.0 MiB \
             allocated)."
        );
        assert!(notes[2].contains("no boot time for flint (restored) (shown as –)"));
        // Printed sometimes: said how often.
        let notes = restored_notes(&w, Some(&files), &[restored_column(&[Some(5), None])], dir);
        assert!(notes[2].starts_with("flint printed a boot time for 1 of the 2 flint (restored)"));
    }

    #[test]
    fn doubts_about_the_restores_are_noted() {
        let dir = Path::new("/w/images/warm");
        let cols = [restored_column(&[None])];
        let notes = restored_notes(&warm(None), None, &cols, dir);
        assert!(notes[1].starts_with("No snapshot was found under /w/images/warm"));
        let before = vec![(PathBuf::from("mem"), 1, None)];
        let after = vec![(PathBuf::from("mem"), 2, None)];
        let notes = restored_notes(&warm(Some(before.clone())), Some(&after), &cols, dir);
        assert!(
            notes[1].contains("changed during the timed rounds"),
            "{notes:?}"
        );
        let notes = restored_notes(&warm(Some(before)), None, &cols, dir);
        assert!(
            notes[1].contains("changed during the timed rounds"),
            "{notes:?}"
        );
    }

    #[test]
    fn snapshot_files_are_listed_relative_and_sorted() {
        let d = scratch("warm");
        assert_eq!(snapshot_files(&d.join("missing")), None);
        std::fs::create_dir(d.join("k")).unwrap();
        std::fs::write(d.join("k").join("state"), b"12345").unwrap();
        std::fs::write(d.join("a"), b"1").unwrap();
        let files = snapshot_files(&d).unwrap();
        let names: Vec<(&Path, u64)> = files.iter().map(|f| (f.0.as_path(), f.1)).collect();
        assert_eq!(names, [(Path::new("a"), 1), (Path::new("k/state"), 5)]);
        assert!(files.iter().all(|f| f.2.is_some()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    fn vmm_memory(virtiofsd_pss_kib: Option<u64>) -> MemoryRecord {
        MemoryRecord::Vmm {
            total_rss_kib: 40_000,
            total_pss_kib: 38_000,
            vmm_rss_kib: Some(10_000),
            vmm_pss_kib: Some(8_000),
            guest_rss_kib: Some(30_000),
            virtiofsd_pss_kib,
        }
    }

    #[test]
    fn the_notes_say_what_the_live_row_counts() {
        let setup = Setup {
            bundle: "/b".into(),
            memory_mib: 128,
            cpus: 1,
            flint: "/usr/bin/flint".into(),
            crun: "crun".into(),
            qemu: "qemu".into(),
            kernel: Some("/k/vmlinux".into()),
            image_cache: "/w/images".into(),
            crun_logs: "/w".into(),
            vm: None,
        };
        let mut runs = vec![record(1, Some(5)), record(2, Some(5))];
        runs[0].memory_at_first_output = Some(vmm_memory(Some(4_000)));
        runs[1].memory_at_first_output = Some(vmm_memory(None));
        let live = Column {
            system: System::FlintLive,
            command: Vec::new(),
            versions: String::new(),
            disk_shared_bytes: 0,
            runs,
        };
        let run_dir = Path::new("/run/crun");
        let systems = [System::FlintCold, System::FlintLive];
        let notes = standard_notes(&systems, std::slice::from_ref(&live), run_dir, &setup);
        let text = notes.join("\n");
        assert!(
            text.contains("flint (live root) has no image: it shares the kernel alone."),
            "{text}"
        );
        assert!(
            text.contains("flint (live root) is flint (cold boot)'s command with `--live-root`")
        );
        assert!(text.contains("is added to flint (live root)'s PSS row"));
        assert!(text.contains("In 1 flint (live root) run(s) no virtiofsd was found"));
        // With the live root alone, no image is said to be shared.
        let notes = standard_notes(&[System::FlintLive], &[], run_dir, &setup);
        let text = notes.join("\n");
        assert!(!text.contains("ext4 image"), "{text}");
        assert!(
            text.contains("Disk: flint (live root) has no image"),
            "{text}"
        );
        // Without it, not a word about it.
        let notes = standard_notes(&[System::FlintCold], &[], run_dir, &setup);
        assert!(!notes.join("\n").contains("live root"));
    }

    #[test]
    fn run_errors_of_the_warm_up_become_one_line() {
        // A flint that cannot start: spawning fails, and the warm-up says so on one line.
        let s = Setup {
            bundle: "/b".into(),
            memory_mib: 128,
            cpus: 1,
            flint: "/nonexistent/flint".into(),
            crun: "crun".into(),
            qemu: "qemu".into(),
            kernel: Some("/k/vmlinux".into()),
            image_cache: "/nonexistent/images".into(),
            crun_logs: "/nonexistent".into(),
            vm: None,
        };
        let e = warm_up(&s, Duration::from_secs(5), Path::new("/run/crun"))
            .err()
            .unwrap();
        assert!(matches!(e, BenchError::WarmUp { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("the flint (restored) row's warm-up run (untimed, before round 1"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
    }
}
