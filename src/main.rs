//! The `flint` command line: parse, build a VmConfig, run the VM, turn the outcome into an exit
//! code. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};

use flint_vmm::api::socket::ApiSocket;
use flint_vmm::config::{self, DiskConfig, FsConfig, NetConfig, VmConfig};
use flint_vmm::exit::ExitReason;
use flint_vmm::sandbox::cgroup::{self, Limit};
use flint_vmm::sandbox::jail::{self, Jail, Side};
use flint_vmm::sandbox::landlock;
use flint_vmm::sandbox::seccomp::SeccompLevel;
use flint_vmm::terminal::RawTerminal;
use flint_vmm::vmm::{self, Vmm};

mod runtime;

#[derive(Parser)]
#[command(
    name = "flint",
    version,
    about = "A small, fast, secure virtual machine monitor on Linux KVM",
    long_about = "flint boots lightweight VMs on Linux KVM: a Linux kernel (ELF vmlinux, with \
                  its PVH entry when present, or bzImage), an optional initramfs and command \
                  line, with the guest's serial console on your terminal."
)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM and attach its serial console to this terminal.
    ///
    /// The guest's console (ttyS0) appears on stdout and stdin is its input; on a terminal,
    /// keys go to the guest as typed (Ctrl-C included) and Ctrl-A x quits. flint exits 0 when
    /// the guest powers off or reboots, 128+N when stopped by signal N (SIGINT, SIGTERM,
    /// SIGHUP), and 1 when a vCPU fails or the VM cannot be built.
    Run(Box<RunArgs>),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Drive a running flint through its control API (`flint run --api-sock PATH`).
    Ctl(CtlArgs),
    /// OCI runtime (runc's command line, for podman and containerd): create a container from
    /// a bundle: its process, the VMM, builds the VM and waits for `start`.
    Create(runtime::CreateArgs),
    /// OCI runtime: let a created container's workload run.
    Start(runtime::IdArgs),
    /// OCI runtime: print a container's state as JSON.
    State(runtime::IdArgs),
    /// OCI runtime: send a signal to a container's process (the VMM).
    Kill(runtime::KillArgs),
    /// OCI runtime: remove a container's state (a running one only with --force).
    Delete(runtime::DeleteArgs),
    /// OCI runtime: list the containers under --root.
    List(runtime::ListArgs),
    /// OCI runtime: print what this runtime supports, as JSON.
    Features,
    /// OCI runtime: run another process in a running container (through the guest's agent),
    /// with its own stdio, terminal and exit status.
    Exec(runtime::exec::ExecArgs),
}

#[derive(clap::Args)]
struct CtlArgs {
    /// The socket the VM's flint serves its API on (its --api-sock).
    #[arg(long, value_name = "PATH")]
    api_sock: PathBuf,
    #[command(subcommand)]
    action: CtlAction,
}

#[derive(Subcommand)]
enum CtlAction {
    /// Print the VM's state as JSON: {"app_name":"flint","state":"Running"|"Paused",...}.
    State,
    /// Pause every vCPU (the guest's clock stops too; devices finish what they were doing).
    Pause,
    /// Let a paused VM run again.
    Resume,
    /// Ask the guest to shut down cleanly: press its ACPI power button.
    Shutdown,
    /// Write a snapshot of the VM into a directory (`state` and `memory`; made if missing,
    /// files replaced), pausing it meanwhile; `flint run --restore DIR` continues it. Prints
    /// what it cost as JSON. Disks are not copied: snapshot their files yourself.
    Snapshot {
        /// The directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// End the VM once the snapshot is written (flint exits 0).
        #[arg(long)]
        stop: bool,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Run one OCI bundle N times each as a flint microVM, a crun container and a QEMU microvm,
    /// and compare time to first output and to exit, CPU time, memory and disk.
    ///
    /// Writes startup.json, startup.md and startup.svg to --out and prints the table.
    Startup(flint_bench::StartupArgs),
    /// Capture a running workload and continue it in a new process: flint's snapshot
    /// (`PUT /snapshot/create`, `flint run --restore`) vs crun's checkpoint/restore (CRIU).
    ///
    /// Writes snapshot.json, snapshot.md and snapshot.svg to --out and prints the table.
    Snapshot(flint_bench::SnapshotArgs),
    /// Host memory of N instances of one workload running at once: crun containers,
    /// cold-booted flint VMs, clones of one snapshot and flint's warm starts (sum of PSS).
    ///
    /// Writes density.json, density.md and density.svg to --out and prints the table.
    Density(flint_bench::DensityArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Guest kernel: an ELF vmlinux (booted through its PVH entry when it has one, else its
    /// 64-bit entry) or a bzImage. Required, but with --oci-bundle, where flint's own kernel is
    /// found through $FLINT_KERNEL or in /usr/local/share/flint/vmlinux or
    /// /usr/share/flint/vmlinux.
    #[arg(long, value_name = "PATH", required_unless_present_any = ["oci_bundle", "restore"])]
    kernel: Option<PathBuf>,
    /// Continue the VM a snapshot holds (`flint ctl snapshot --out DIR`) in this process,
    /// instead of booting: its vCPUs, memory (mapped copy-on-write from DIR/memory, read as
    /// the guest touches it) and devices as they were. --disk and --net, if given, replace
    /// the snapshot's disk files and TAPs in order (all of them; each disk the same size).
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "kernel", "oci_bundle", "initrd", "cmdline", "append", "rootfs", "boot_timer",
        "no_acpi", "cpus", "memory", "fs", "vsock"])]
    restore: Option<PathBuf>,
    /// Run an OCI runtime bundle (a directory with config.json and its rootfs, as crun and runc
    /// take) in the VM: its process with its args, env, cwd, user and mounts, its stdout and
    /// stderr on flint's, and its exit code as flint's. The rootfs becomes an ext4 image (cached
    /// by content in $FLINT_IMAGE_CACHE, /var/cache/flint/images for root, else
    /// ~/.cache/flint/images) shared read-only; the guest writes to a tmpfs layer over it.
    ///
    /// It starts from a snapshot of flint's kernel and init booted to "waiting for a
    /// workload", made on first use and kept in the image cache's `warm/` directory (one per
    /// kernel, --cpus, --memory, --no-acpi and --append), restored with the bundle's image and
    /// run spec, fresh entropy and the host's time. With --disk or --net, or with --cold, the
    /// kernel boots instead.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["initrd", "cmdline", "rootfs"])]
    oci_bundle: Option<PathBuf>,
    /// With --oci-bundle: boot the kernel for this run instead of restoring the warm snapshot.
    #[arg(long, requires = "oci_bundle")]
    cold: bool,
    /// With --oci-bundle: share the bundle's rootfs directory itself with the guest (virtio-fs)
    /// as the container's root, instead of an ext4 image of it with a tmpfs layer: the
    /// workload's writes land in rootfs/, as a container's do with crun. Boots the kernel
    /// (no warm start).
    #[arg(long, requires = "oci_bundle")]
    live_root: bool,
    /// Internal (flint runs itself with it to make a warm snapshot): boot the warm OCI guest
    /// and, when its init waits for a workload, snapshot it into DIR and end.
    #[arg(long, value_name = "DIR", hide = true, requires = "kernel",
          conflicts_with_all = ["oci_bundle", "restore", "initrd", "rootfs", "disk", "net", "fs",
                                "vsock"])]
    make_warm_snapshot: Option<PathBuf>,
    /// Initramfs (or initrd) image to load with the kernel.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line, replacing flint's default:
    #[arg(long, value_name = "STRING", long_help = format!(
        "Kernel command line, replacing flint's default:\n  {}", config::DEFAULT_CMDLINE))]
    cmdline: Option<String>,
    /// Extra kernel command line arguments, appended to the default (or to --cmdline).
    #[arg(long, value_name = "STRING")]
    append: Option<String>,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_VCPUS)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = config::DEFAULT_MEMORY_MIB)]
    memory: u64,
    /// Root filesystem image: attached as the first disk (/dev/vda) and booted from
    /// (`root=/dev/vda rw` on the command line). Takes the same options as --disk.
    #[arg(long, value_name = "PATH")]
    rootfs: Option<DiskConfig>,
    /// A raw disk image as a virtio-blk device, after the rootfs, in order (/dev/vdb, ...):
    /// `path=FILE[,ro][,serial=ID]`. `ro` opens the file read-only and the guest sees a read-only
    /// disk; `serial` (up to 20 characters) is what the guest reads as its ID. Repeatable.
    #[arg(long, value_name = "path=FILE[,ro][,serial=ID]")]
    disk: Vec<DiskConfig>,
    /// A network interface on an existing TAP device: `tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`. The
    /// guest sees virtio-net interfaces eth0, eth1, ... in order; without `mac=` flint picks a
    /// stable locally administered MAC from the TAP's name. Repeatable.
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    net: Vec<NetConfig>,
    /// Share a host directory with the guest, live, over virtio-fs: `tag=TAG,path=DIR[,ro]`
    /// (flint starts a virtiofsd for it and stops it at exit; `ro` refuses every write), or
    /// `tag=TAG,socket=PATH` (a virtiofsd you started, listening on PATH). The guest mounts it
    /// by its tag: `mount -t virtiofs TAG /mnt` (its kernel needs CONFIG_VIRTIO_FS). virtiofsd
    /// is $FLINT_VIRTIOFSD, or found on $PATH or in /usr/libexec. Repeatable. A VM with
    /// shares cannot be snapshotted.
    #[arg(long, value_name = "tag=TAG,path=DIR[,ro]")]
    fs: Vec<FsConfig>,
    /// A virtio-vsock device with guest CID N whose host side is the Unix socket PATH
    /// (Firecracker's "hybrid vsock"): a host client connects to PATH and writes
    /// `CONNECT <port>\n` to reach a guest port; a guest connection to CID 2 port P reaches
    /// the Unix socket PATH_P. A VM with vsock cannot be snapshotted.
    #[arg(long, value_name = "cid=N,socket=PATH")]
    vsock: Option<config::VsockConfig>,
    /// Print the time from flint's start to the guest init's boot-timer write (one byte, value
    /// 123, to guest physical address 0xd0000000 — Firecracker's boot timer) on stderr, as
    /// "flint: guest booted in N us".
    #[arg(long)]
    boot_timer: bool,
    /// What a flint thread making a system call outside its seccomp allow-list gets: `kill`
    /// ends flint with a message naming the thread and the call (exit status 159), `log`
    /// lets it through and the kernel logs it (to find what a new path needs), `off` installs
    /// no filter. Each kind of thread (vCPUs, device workers, the main event loop) has its own
    /// list.
    #[arg(long, value_name = "kill|log|off", default_value = "kill")]
    seccomp: SeccompLevel,
    /// Stop passing on the guest's console output after this many bytes (stdout and, with
    /// --oci-bundle, stderr together), so that a chatty guest cannot fill a disk; the rest is
    /// dropped, and counted on stderr when flint exits.
    #[arg(long, value_name = "BYTES")]
    console_limit: Option<u64>,
    /// Give the guest no ACPI tables: it then finds its CPUs in the MP table and its virtio
    /// devices only on the kernel command line (kernels built with
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), and powers off through the i8042 reset.
    #[arg(long)]
    no_acpi: bool,
    /// Serve the control API (HTTP/1.1 + JSON, see resources/api/flint-api.yaml) on a Unix
    /// socket at PATH, made 0600 and removed when flint exits: pause, resume, state, shutdown
    /// (`flint ctl` is its client).
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    #[command(flatten)]
    confine: ConfineArgs,
}

/// Where flint confines itself beyond seccomp and Landlock (which are always on).
#[derive(clap::Args)]
struct ConfineArgs {
    /// Confine flint (needs root): once its inputs are open, flint enters new mount, PID, IPC
    /// and UTS namespaces, makes an empty read-only tmpfs its root, sets rlimits (1024 open
    /// files, no file written past its largest writable disk, no core dumps), drops every
    /// capability and runs as --uid/--gid.
    #[arg(long, requires_all = ["uid", "gid"])]
    jail: bool,
    /// With --jail: the user id flint runs as (not 0).
    #[arg(long, value_name = "UID", requires = "jail")]
    uid: Option<u32>,
    /// With --jail: the group id flint runs as (not 0); supplementary groups are dropped.
    #[arg(long, value_name = "GID", requires = "jail")]
    gid: Option<u32>,
    /// With --jail: join this network namespace (e.g. /run/netns/NAME) before opening the
    /// TAPs, so that --net names that namespace's TAPs.
    #[arg(long, value_name = "PATH", requires = "jail")]
    netns: Option<PathBuf>,
    /// Run flint in this cgroup v2 directory, made if missing (e.g. /sys/fs/cgroup/flint/vm1):
    /// its limits then cover the VMM's threads and the guest's memory. flint leaves the
    /// directory when it exits.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// A limit written into the --cgroup directory before flint joins it, KEY=VALUE with KEY
    /// one of cpu.max, cpu.weight, memory.high, memory.max, memory.swap.max, pids.max (e.g.
    /// memory.max=600M). Repeatable.
    #[arg(long, value_name = "KEY=VALUE", requires = "cgroup")]
    cgroup_limit: Vec<Limit>,
}

/// How a `flint run` ended.
enum Outcome {
    /// The VM ran in this process and ended for this reason.
    Vm(ExitReason),
    /// This process supervised a jailed flint, which reported everything itself and ended
    /// with this status.
    Jail(i32),
}

/// The error and its causes on one line: each error's message says what it adds, not its
/// source's, so the chain joined by ": " reads as one sentence.
fn one_line(err: &anyhow::Error) -> String {
    flint_vmm::exit::error_chain(err.as_ref())
}

fn run(args: RunArgs, start: Instant) -> anyhow::Result<Outcome> {
    if let Some(bundle) = args.oci_bundle.clone() {
        return run_bundle(&bundle, args, start, None);
    }
    if let Some(dir) = args.make_warm_snapshot.clone() {
        return make_warm_snapshot(&dir, &args, start);
    }
    if let Some(dir) = &args.restore {
        let (console, how) = (stdio_console(&args)?, How::of(&args));
        return boot(
            What::Restore(dir, &args.disk, &args.net),
            console,
            how,
            start,
        );
    }
    let Some(kernel) = args.kernel.clone() else {
        anyhow::bail!("--kernel is required (or --oci-bundle)");
    };
    let config = VmConfig {
        kernel,
        initrd: args.initrd.clone().map(config::Initrd::File),
        cmdline: config::compose_cmdline(args.cmdline.as_deref(), args.append.as_deref()),
        vcpus: args.cpus,
        memory_mib: args.memory,
        boot_timer: args.boot_timer,
        root_on_first_disk: args.rootfs.is_some(),
        disks: args
            .rootfs
            .clone()
            .into_iter()
            .chain(args.disk.clone())
            .collect(),
        nets: args.net.clone(),
        acpi: !args.no_acpi,
        fs: args.fs.clone(),
        vsock: args.vsock.clone(),
    };
    boot(
        What::Boot(&config),
        stdio_console(&args)?,
        How::of(&args),
        start,
    )
}

/// What `boot` makes a VM from.
enum What<'a> {
    Boot(&'a VmConfig),
    /// A snapshot directory, and the disks and TAPs that replace its own (if given).
    Restore(&'a std::path::Path, &'a [DiskConfig], &'a [NetConfig]),
    /// A snapshot opened already.
    Opened(Box<vmm::RestoreInputs>),
}

/// Its inputs, opened.
enum Opened<'a> {
    Boot(&'a VmConfig, vmm::Inputs),
    Restore(Box<vmm::RestoreInputs>),
}

/// How a VM runs, beside its config: confinement, seccomp, the control API.
struct How<'a> {
    confine: &'a ConfineArgs,
    seccomp: SeccompLevel,
    api_sock: Option<&'a std::path::Path>,
    /// Snapshot the VM into these files when its guest says it is warm (and end it).
    warm_snapshot: Option<vmm::SnapshotFiles>,
    /// As an OCI runtime's container: say when the VM is built, then wait for `start`.
    gate: Option<&'a mut runtime::Gate>,
}

impl<'a> How<'a> {
    fn of(args: &'a RunArgs) -> Self {
        How {
            confine: &args.confine,
            seccomp: args.seccomp,
            api_sock: args.api_sock.as_deref(),
            warm_snapshot: None,
            gate: None,
        }
    }
}

/// The console on flint's stdin and stdout, with --console-limit.
fn stdio_console(args: &RunArgs) -> anyhow::Result<vmm::Console> {
    let mut console = vmm::stdio_console().context("cannot use stdout as the console")?;
    console.limit = args.console_limit;
    Ok(console)
}

/// Opens the inputs, confines flint (the jail if asked, Landlock always), builds the VM and
/// runs it to its end.
fn boot(
    what: What,
    mut console: vmm::Console,
    how: How,
    start: Instant,
) -> anyhow::Result<Outcome> {
    let confine = how.confine;
    // A container's terminal belongs to its workload: no Ctrl-A escapes.
    if how.gate.is_some() {
        console.escapes = false;
    }
    // First, while flint has no other thread: binding forks the socket's remover.
    let api = match how.api_sock {
        Some(path) => Some(ApiSocket::bind(path)?),
        None => None,
    };
    let jail = match (confine.jail, confine.uid, confine.gid) {
        (true, Some(uid), Some(gid)) => {
            jail::check_can_jail(uid, gid)?;
            Some((uid, gid))
        }
        _ => None,
    };
    if let Some(path) = &confine.cgroup {
        cgroup::join(path, &confine.cgroup_limit)?;
    }
    if let Some(path) = &confine.netns {
        jail::enter_netns(path)?;
    }
    let inputs = match what {
        What::Boot(config) => Opened::Boot(config, vmm::Inputs::open(config)?),
        What::Restore(dir, disks, nets) => {
            Opened::Restore(Box::new(vmm::RestoreInputs::open(dir, disks, nets)?))
        }
        What::Opened(inputs) => Opened::Restore(inputs),
    };
    // A snapshot of an --oci-bundle VM has the workload's stderr on a second UART: restored,
    // it gets flint's stderr there, and the end of input as the bundle run gives it.
    if let Opened::Restore(i) = &inputs {
        if i.machine().serial2 && console.error_output.is_none() {
            oci_console(&mut console)?;
        }
    }
    if let Some((uid, gid)) = jail {
        let (mut largest, memory_mib) = match &inputs {
            Opened::Boot(c, i) => (i.largest_writable_disk(), c.memory_mib),
            Opened::Restore(i) => (i.largest_writable_disk(), i.machine().memory_mib),
        };
        // With the API, a snapshot's memory file is written through flint too.
        if how.api_sock.is_some() || how.warm_snapshot.is_some() {
            largest = largest.max(flint_vmm::snapshot::largest_file(memory_mib));
        }
        let max_file_size = jail::file_size_limit(largest, console.limit);
        let jail = Jail {
            uid,
            gid,
            max_file_size,
        };
        if let Side::Supervisor(status) = jail.enter()? {
            return Ok(Outcome::Jail(status));
        }
    }
    // From here on flint reaches no file by path: everything it needs is open.
    if let Some(note) = landlock::restrict(&[])?.note() {
        eprintln!("{note}");
    }
    test_open();
    let mut vmm = match inputs {
        Opened::Boot(config, inputs) => Vmm::build(config, inputs, console, start)?,
        Opened::Restore(inputs) => Vmm::restore(*inputs, console, start)?,
    };
    if let Some(api) = &api {
        let listener = api.listener.try_clone();
        vmm.serve_api(listener.context("cannot use the API socket")?);
    }
    if let Some(files) = how.warm_snapshot {
        vmm.snapshot_when_ready(files);
    }
    let container = how.gate.is_some();
    if let Some(gate) = how.gate {
        gate.ready()
            .context("cannot tell `create` that the VM is ready")?;
        gate.wait_for_start()
            .context("waiting for `start` failed")?;
    }
    // Raw mode only once the VM is built, and restored when `_raw` drops on every return.
    let _raw = if container {
        RawTerminal::enable_fully_if_tty(libc::STDIN_FILENO)?
    } else {
        RawTerminal::enable_if_tty(libc::STDIN_FILENO)?
    };
    Ok(Outcome::Vm(vmm.run(how.seccomp)?))
}

/// Debug builds: `FLINT_TEST_OPEN=PATH` has flint try to open PATH once it is confined and say
/// what happened on stderr (how the tests see that Landlock and the jail hold).
fn test_open() {
    if cfg!(debug_assertions) {
        if let Some(path) = std::env::var_os("FLINT_TEST_OPEN") {
            let what = match std::fs::File::open(&path) {
                Ok(_) => "opened".to_string(),
                Err(e) => e.to_string(),
            };
            eprintln!(
                "flint: test: open {}: {what}",
                PathBuf::from(path).display()
            );
        }
    }
}

/// The container's process (forked by `flint create`): the bundle's VM with its root shared
/// live (the workload's writes land in the container's root, as with runc), built before
/// `create` returns and run once `start` says so.
fn container(gate: &mut runtime::Gate, start: Instant) -> anyhow::Result<Outcome> {
    let bundle = gate.bundle.clone();
    let mut argv: Vec<std::ffi::OsString> = ["flint", "run", "--live-root", "--oci-bundle"]
        .map(Into::into)
        .into();
    argv.push(bundle.clone().into());
    if let Some(dir) = &gate.cgroup {
        argv.push("--cgroup".into());
        argv.push(dir.clone().into());
    }
    // The guest's agent (exec, signals) is reached over vsock; CID 3 in every container's VM.
    let mut vsock = std::ffi::OsString::from("cid=3,socket=");
    vsock.push(&gate.vsock);
    argv.push("--vsock".into());
    argv.push(vsock);
    let cli = Cli::try_parse_from(argv).context("internal error: the container's run options")?;
    let Command::Run(args) = cli.command else {
        anyhow::bail!("internal error: the container's run options are not a run");
    };
    run_bundle(&bundle, *args, start, Some(gate))
}

/// `run --oci-bundle`: the bundle's rootfs image first (/dev/vda, read-only), then any --disk;
/// the workload's stdout on COM1 and stderr on COM2; its exit status as flint's. Restored
/// from the warm snapshot unless --cold, --disk, --net or a share (a bind mount, --live-root,
/// --fs).
fn run_bundle(
    bundle: &std::path::Path,
    mut args: RunArgs,
    start: Instant,
    gate: Option<&mut runtime::Gate>,
) -> anyhow::Result<Outcome> {
    let kernel = match args.kernel.clone().or_else(flint_oci::default_kernel) {
        Some(k) => k,
        None => anyhow::bail!(
            "--oci-bundle needs flint's guest kernel: pass --kernel PATH or set FLINT_KERNEL, or \
             install it as {} (resources/guest/build.sh builds it)",
            flint_oci::DEFAULT_KERNELS[0]
        ),
    };
    let cache = flint_oci::default_cache_dir()?;
    let options = flint_oci::PrepareOptions {
        live_root: args.live_root,
        // As an OCI runtime, the caller made the bundle and names its root where it is.
        runtime: gate.is_some(),
    };
    let plan = flint_oci::prepare_with(bundle, &cache, &options)?;
    // linux.resources size the VM: memory.limit its RAM, the CPU quota its vCPUs.
    if let Some(mib) = plan.resources.memory_mib() {
        args.memory = mib;
    }
    if let Some(cpus) = plan.resources.cpus {
        args.cpus = cpus;
    }
    if let Some(netns) = &plan.netns {
        connect_network(netns, &mut args)?;
    }
    // cpu.shares as cpu.weight on the VMM's cgroup (a runtime's container), where the host's
    // cgroup tree lets the cpu controller be enabled; the memory limit is the guest's RAM
    // instead (a limit sized for the guest would not fit the VMM too).
    if let (Some(weight), Some(dir), true) = (
        plan.resources.cpu_weight,
        args.confine.cgroup.clone(),
        gate.is_some(),
    ) {
        if runtime::cgroup::enable_controller(&dir, "cpu") {
            args.confine.cgroup_limit.push(Limit {
                key: "cpu.weight".into(),
                value: weight.to_string(),
            });
        }
    }
    let how = How {
        gate,
        ..How::of(&args)
    };
    let cmdline = config::compose_cmdline(Some(&plan.kernel_args), args.append.as_deref());
    let root = plan.image.as_ref().map(|image| DiskConfig {
        path: image.clone(),
        read_only: true,
        serial: Some(ROOT_SERIAL.into()),
    });
    // The bundle's bind mounts (and a live root), then any --fs of the user's.
    let shares: Vec<FsConfig> = plan
        .shares
        .iter()
        .map(|s| FsConfig {
            tag: s.tag.clone(),
            source: config::FsSource::Path {
                path: s.path.clone(),
                read_only: s.read_only,
            },
        })
        .chain(args.fs.clone())
        .collect();
    let console = bundle_console(&args)?;
    // The warm guest has its two disks and nothing else: other devices need a boot.
    let cold = args.cold
        || !args.disk.is_empty()
        || !args.net.is_empty()
        || !shares.is_empty()
        || args.vsock.is_some();
    let outcome = if cold {
        let config = VmConfig {
            kernel,
            initrd: Some(config::Initrd::Generated(plan.initramfs()?)),
            cmdline,
            vcpus: args.cpus,
            memory_mib: args.memory,
            boot_timer: args.boot_timer,
            root_on_first_disk: false,
            disks: root.into_iter().chain(args.disk.clone()).collect(),
            nets: args.net.clone(),
            acpi: !args.no_acpi,
            fs: shares,
            vsock: args.vsock.clone(),
        };
        boot(What::Boot(&config), console, how, start)?
    } else {
        let guest = flint_oci::warm::WarmGuest {
            kernel: &kernel,
            vcpus: args.cpus,
            memory_mib: args.memory,
            acpi: !args.no_acpi,
            cmdline: &cmdline,
        };
        let dir = flint_oci::warm::dir(&cache, &flint_oci::warm::key(&guest)?);
        // The host's time as late as possible: the guest sets its clock from it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let spec = flint_oci::warm::spec_disk(&plan.spec, &flint_oci::warm::seed()?, now)?;
        let (_spec_file, spec_path) = flint_oci::warm::memory_file(&spec)?;
        // A live root (no image) is a share, so it booted above.
        let root = root.context("a warm start needs the bundle's root image")?;
        let disks = [
            root,
            DiskConfig {
                path: spec_path,
                read_only: true,
                serial: Some(SPEC_SERIAL.into()),
            },
        ];
        let mut inputs = open_warm(&guest, &dir, &disks, args.seccomp)?;
        inputs.set_boot_timer(args.boot_timer);
        inputs.mark_in_memory(1);
        boot(What::Opened(Box::new(inputs)), console, how, start)?
    };
    match outcome {
        Outcome::Vm(ExitReason::Shutdown) => anyhow::bail!(
            "the guest stopped without reporting the process's exit status (did the kernel \
             panic? its messages go to stderr)"
        ),
        reason => Ok(reason),
    }
}

/// Joins the container's network namespace `netns` (podman's, CNI's), as a runtime's container
/// process would, and gives the VM its interface: a NIC on a TAP joined to it, with its MAC,
/// and its address and gateway on the kernel command line.
fn connect_network(netns: &std::path::Path, args: &mut RunArgs) -> anyhow::Result<()> {
    jail::enter_netns(netns)?;
    // Refused before anything is made in the namespace.
    if !args.net.is_empty() {
        if let Some(name) = flint_oci::network::interface()? {
            anyhow::bail!(
                "--net cannot be used with a bundle whose network namespace ({}) has an \
                 interface ({name}): the VM's NIC is that interface",
                netns.display()
            );
        }
    }
    let Some(link) = flint_oci::network::connect()? else {
        // Loopback only (--network none): the guest has its own.
        return Ok(());
    };
    args.net.push(config::NetConfig {
        tap: link.tap,
        mac: Some(flint_vmm::devices::virtio::net::Mac(link.mac)),
        mtu: link.mtu,
    });
    args.append = Some(match args.append.take() {
        Some(more) => format!("{} {more}", link.kernel_arg),
        None => link.kernel_arg,
    });
    Ok(())
}

/// The serial numbers of an OCI guest's root image and (warm) spec disk.
const ROOT_SERIAL: &str = "flint-rootfs";
const SPEC_SERIAL: &str = "flint-spec";

/// An OCI run's console: stdout on COM1, stderr on COM2, ^D at the end of input, input held
/// until the init has set up the console.
fn bundle_console(args: &RunArgs) -> anyhow::Result<vmm::Console> {
    let mut console = stdio_console(args)?;
    oci_console(&mut console)?;
    console.hold_input_until_ready = true;
    Ok(console)
}

/// Makes `console` an OCI guest's: stderr on COM2, ^D at the end of input.
fn oci_console(console: &mut vmm::Console) -> anyhow::Result<()> {
    let stderr = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned();
    console.error_output = Some(stderr.context("cannot use stderr as the workload's stderr")?);
    console.eof_byte = Some(0x04);
    Ok(())
}

/// Opens the warm snapshot in `dir` with these disks, making it first if there is none, or
/// anew if the one there cannot be restored here (another host CPU, a damaged file).
fn open_warm(
    guest: &flint_oci::warm::WarmGuest,
    dir: &std::path::Path,
    disks: &[DiskConfig],
    seccomp: SeccompLevel,
) -> anyhow::Result<vmm::RestoreInputs> {
    let open = || vmm::RestoreInputs::open_with(dir, disks, &[], vmm::DiskSizes::New);
    flint_oci::warm::check_private(dir)?;
    if dir.join(flint_vmm::snapshot::STATE_FILE).exists() {
        match open() {
            Ok(inputs) => return Ok(inputs),
            Err(e) => {
                eprintln!(
                    "flint: the warm snapshot {} cannot be restored ({}); making it anew",
                    dir.display(),
                    flint_vmm::exit::error_chain(&e)
                );
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
    }
    make_warm(guest, dir, seccomp)?;
    Ok(open()?)
}

/// How long making a warm snapshot may take (a boot of flint's small kernel: seconds even
/// under emulation).
const WARM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Makes the warm snapshot for `guest` in `dir`: flint runs itself with --make-warm-snapshot
/// (a VM of its own: this process's Landlock and seccomp must not be spent on it) into a
/// private directory beside `dir`, renamed into place when complete, so that a concurrent
/// run never sees half a snapshot.
fn make_warm(
    guest: &flint_oci::warm::WarmGuest,
    dir: &std::path::Path,
    seccomp: SeccompLevel,
) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = dir
        .parent()
        .context("the warm snapshot's directory has no parent")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .with_context(|| format!("cannot make {}", parent.display()))?;
    remove_abandoned(parent);
    let tmp = parent.join(format!("{MAKING}{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .with_context(|| format!("cannot make {}", tmp.display()))?;
    let result = run_warm_maker(guest, &tmp, seccomp).and_then(|()| {
        match std::fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            // Another flint made it meanwhile: theirs is as good.
            Err(_) if dir.join(flint_vmm::snapshot::STATE_FILE).exists() => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "cannot move the warm snapshot to {}",
                dir.display()
            ))),
        }
    });
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// A warm snapshot being made: this, then the making flint's PID.
const MAKING: &str = ".making-";

/// Removes what flints that were killed while making a warm snapshot left in `dir`.
fn remove_abandoned(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(MAKING));
        if pid.is_some_and(|p| !std::path::Path::new("/proc").join(p).exists()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Runs `flint run --make-warm-snapshot TMP` for `guest` and waits for it (bounded).
fn run_warm_maker(
    guest: &flint_oci::warm::WarmGuest,
    tmp: &std::path::Path,
    seccomp: SeccompLevel,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::process::{Command, Stdio};
    let create = |path: &std::path::Path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot make {}", path.display()))
    };
    create(&tmp.join(flint_oci::warm::PLACEHOLDER))?;
    let log_path = tmp.join("log");
    let log = create(&log_path)?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("run")
        .arg("--kernel")
        .arg(guest.kernel)
        .args(["--cpus", &guest.vcpus.to_string()])
        .args(["--memory", &guest.memory_mib.to_string()])
        .args(["--cmdline", guest.cmdline])
        .args(["--seccomp", seccomp.name()])
        .arg("--make-warm-snapshot")
        .arg(tmp)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("dup")?)
        .stderr(log);
    if !guest.acpi {
        cmd.arg("--no-acpi");
    }
    use std::os::unix::process::CommandExt;
    // The child dies with this process (killed, it must not leave a guest running).
    let parent = std::process::id();
    // SAFETY: die_with_parent is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(move || flint_vmm::sandbox::die_with_parent(parent, libc::SIGKILL));
    }
    let mut child = cmd
        .spawn()
        .context("cannot start flint to make the warm snapshot")?;
    let deadline = Instant::now() + WARM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for the warm snapshot")? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let complete = tmp
        .join(flint_vmm::snapshot::STATE_FILE)
        .metadata()
        .is_ok_and(|m| m.len() > 0);
    if status.is_some_and(|s| s.success()) && complete {
        let _ = std::fs::remove_file(&log_path);
        return Ok(());
    }
    let said = std::fs::read_to_string(&log_path).unwrap_or_default();
    let said: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = said[said.len().saturating_sub(3)..].join(" / ");
    let how = match status {
        None => format!("the guest was not ready in {} s", WARM_TIMEOUT.as_secs()),
        Some(s) if s.success() => "the guest ended before its init was ready".into(),
        Some(s) => format!("its flint ended with {s}"),
    };
    anyhow::bail!(
        "making the warm snapshot failed: {how}{}{last} (--cold boots without it)",
        if last.is_empty() { "" } else { ": " }
    )
}

/// `run --make-warm-snapshot DIR`: boots the warm OCI guest (no workload, two empty disks,
/// an OCI console without input) and snapshots it into DIR when its init waits.
fn make_warm_snapshot(
    dir: &std::path::Path,
    args: &RunArgs,
    start: Instant,
) -> anyhow::Result<Outcome> {
    let Some(kernel) = args.kernel.clone() else {
        anyhow::bail!("--make-warm-snapshot needs --kernel");
    };
    let placeholder = |serial: &str| DiskConfig {
        path: dir.join(flint_oci::warm::PLACEHOLDER),
        read_only: true,
        serial: Some(serial.into()),
    };
    let config = VmConfig {
        kernel,
        initrd: Some(config::Initrd::Generated(flint_oci::warm::initramfs()?)),
        cmdline: config::compose_cmdline(args.cmdline.as_deref(), args.append.as_deref()),
        vcpus: args.cpus,
        memory_mib: args.memory,
        boot_timer: false,
        root_on_first_disk: false,
        disks: vec![placeholder(ROOT_SERIAL), placeholder(SPEC_SERIAL)],
        nets: Vec::new(),
        acpi: !args.no_acpi,
        fs: Vec::new(),
        vsock: None,
    };
    // No input: the end of it would reach the restored guest as its first ^D.
    let mut console = bundle_console(args)?;
    console.input = None;
    let (state, memory) = snapshot_files(dir)?;
    let mut how = How::of(args);
    how.warm_snapshot = Some(vmm::SnapshotFiles { state, memory });
    boot(What::Boot(&config), console, how, start)
}

/// `flint ctl`: one API request; prints the body of a response that has one.
fn ctl(args: &CtlArgs) -> anyhow::Result<()> {
    use flint_vmm::api::client::request;
    let sock = &args.api_sock;
    let reply = match &args.action {
        CtlAction::Snapshot { out, stop } => {
            let (state, memory) = snapshot_files(out)?;
            use std::os::fd::AsRawFd;
            let body = format!(r#"{{"stop":{stop}}}"#);
            request(
                sock,
                "PUT",
                "/snapshot/create",
                Some(&body),
                &[state.as_raw_fd(), memory.as_raw_fd()],
            )?
        }
        CtlAction::State => request(sock, "GET", "/", None, &[])?,
        CtlAction::Pause => request(sock, "PATCH", "/vm", Some(r#"{"state":"Paused"}"#), &[])?,
        CtlAction::Resume => request(sock, "PATCH", "/vm", Some(r#"{"state":"Resumed"}"#), &[])?,
        CtlAction::Shutdown => request(
            sock,
            "PUT",
            "/actions",
            Some(r#"{"action_type":"Shutdown"}"#),
            &[],
        )?,
    };
    if !reply.body.is_empty() {
        println!("{}", reply.body);
    }
    Ok(())
}

/// `flint_vmm::snapshot::create_files` for `flint ctl snapshot --out DIR` and the warm maker.
fn snapshot_files(dir: &std::path::Path) -> anyhow::Result<(std::fs::File, std::fs::File)> {
    use flint_vmm::snapshot::FilesError;
    flint_vmm::snapshot::create_files(dir, false).map_err(|e| match e {
        FilesError::Dir(dir, e) => anyhow::Error::new(e).context(format!(
            "--out {}: cannot make the directory",
            dir.display()
        )),
        e @ FilesError::File(..) => e.into(),
    })
}

/// Parses the command line; a usage error is one line on stderr and exit code 2 (help and
/// version print as usual).
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                // clap's message runs until its first blank line (the usage follows).
                let text = e.to_string();
                let what: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let what = what.join(" ");
                let what = what.strip_prefix("error: ").unwrap_or(&what);
                eprintln!("flint: error: {what} (see flint --help)");
                Err(ExitCode::from(2))
            }
        },
    }
}

fn main() -> ExitCode {
    let start = Instant::now();
    // Nothing flint's parent left open (a socket, a host file) stays reachable from it.
    if let Err(e) = flint_vmm::sandbox::close_inherited_fds() {
        eprintln!("flint: error: cannot close inherited file descriptors: {e}");
        return ExitCode::FAILURE;
    }
    flint_vmm::panic::install_hook();
    // The main thread's edge: a panic here (a flint bug) is one line and exit 1, with the
    // terminal restored by the unwinding, like a panic in any other flint thread.
    match flint_vmm::panic::guard(|| real_main(start)) {
        Ok(code) => code,
        Err(what) => {
            eprintln!("flint: error: internal error: {what}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(start: Instant) -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let globals = &cli.runtime;
    let runtime_done = |done: anyhow::Result<()>| match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            globals.report(&one_line(&e));
            ExitCode::FAILURE
        }
    };
    let mut quiet_signals = false;
    let result = match cli.command {
        Command::Run(args) => run(*args, start),
        Command::Create(args) => match runtime::create(globals, &args) {
            Ok(runtime::Created::Done) => return ExitCode::SUCCESS,
            Ok(runtime::Created::Container(mut gate)) => {
                // A signal ends a container the way podman and containerd expect: by its
                // status alone, with no message in the container's output.
                quiet_signals = true;
                let result = if let Some(holds) = gate.sandbox.take() {
                    runtime::sandbox::hold(&mut gate, &holds).map(|never| match never {})
                } else {
                    container(&mut gate, start)
                };
                if let Err(e) = &result {
                    if gate.fail(&one_line(e)) {
                        return ExitCode::FAILURE;
                    }
                }
                result
            }
            Err(e) => return runtime_done(Err(e)),
        },
        Command::Start(args) => return runtime_done(runtime::start(globals, &args)),
        Command::State(args) => return runtime_done(runtime::show_state(globals, &args)),
        Command::Kill(args) => return runtime_done(runtime::kill(globals, &args)),
        Command::Delete(args) => return runtime_done(runtime::delete(globals, &args)),
        Command::List(args) => return runtime_done(runtime::list(globals, &args)),
        Command::Features => return runtime_done(runtime::features()),
        Command::Exec(args) => {
            return match runtime::exec::exec(globals, &args) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    globals.report(&one_line(&e));
                    ExitCode::from(runtime::exec::error_status(&e))
                }
            }
        }
        Command::Ctl(args) => {
            return match ctl(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flint: error: {}", one_line(&e));
                    ExitCode::FAILURE
                }
            };
        }
        Command::Bench(bench) => {
            let done = match bench {
                BenchCommand::Startup(args) => flint_bench::startup(&args).map(drop),
                BenchCommand::Snapshot(args) => flint_bench::snapshot(&args).map(drop),
                BenchCommand::Density(args) => flint_bench::density(&args).map(drop),
            };
            return match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flint: error: {}", one_line(&e.into()));
                    ExitCode::FAILURE
                }
            };
        }
    };
    let reason = match result {
        Ok(Outcome::Vm(reason)) => reason,
        // The jailed flint said what happened; its status is ours.
        Ok(Outcome::Jail(status)) => return ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("flint: error: {}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    match &reason {
        ExitReason::Shutdown | ExitReason::Status(_) => {}
        ExitReason::Signal(_) if quiet_signals => {}
        ExitReason::Signal(sig) => {
            eprintln!("flint: stopped by signal {sig}; the VM was shut down");
        }
        ExitReason::Snapshotted => {
            eprintln!("flint: the VM was stopped after its snapshot");
        }
        ExitReason::ConsoleQuit => {
            eprintln!("flint: quit from the console (Ctrl-A x); the VM was shut down");
        }
        ExitReason::VcpuFailure(what) => eprintln!("flint: the VM failed: {what}"),
        ExitReason::DeviceFailure(what) => eprintln!("flint: {what}"),
        ExitReason::InternalError(what) => {
            eprintln!("flint: error: internal error: {what}; the VM was stopped");
        }
    }
    // Exit codes are 0..=255 by construction (a status byte, 128 + a signal number, 0 or 1).
    ExitCode::from(u8::try_from(reason.exit_code()).unwrap_or(1))
}
