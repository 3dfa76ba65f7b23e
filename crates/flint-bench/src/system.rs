//! The systems under comparison and how each is launched: flint and QEMU's `microvm` run the
//! bundle as a microVM from the same image and kernel (flint restoring its warm snapshot of
//! that kernel by default, or booting it with `--cold`, as QEMU does with the same initramfs);
//! flint with `--live-root` boots cold with the bundle's rootfs/ itself as the guest's root,
//! shared over virtio-fs (no image); crun runs it as a container.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::run::WaitStatus;
use super::BenchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum System {
    /// flint's default: `flint run --oci-bundle` restores its cached snapshot of the guest
    /// kernel and init booted to "waiting for a workload" (made on first use).
    FlintRestored,
    /// flint booting the kernel every time: `flint run --oci-bundle --cold`.
    FlintCold,
    /// flint booting with the bundle's rootfs/ directory as the guest's root, shared over
    /// virtio-fs by a virtiofsd flint starts (no image): `flint run --oci-bundle --cold
    /// --live-root`.
    FlintLive,
    /// The crun OCI runtime: the same bundle as a container.
    Crun,
    /// QEMU's microvm machine with KVM, booting what flint would boot.
    Qemu,
}

impl System {
    /// The key in the JSON report, the progress lines and the errors.
    pub fn key(self) -> &'static str {
        match self {
            System::FlintRestored => "flint-restored",
            System::FlintCold => "flint-cold",
            System::FlintLive => "flint-live",
            System::Crun => "crun",
            System::Qemu => "qemu",
        }
    }

    /// Whether it boots a VM (and so needs a kernel and the guest image).
    pub fn is_vm(self) -> bool {
        !matches!(self, System::Crun)
    }

    /// Whether it is flint (any way of starting it).
    pub fn is_flint(self) -> bool {
        matches!(
            self,
            System::FlintRestored | System::FlintCold | System::FlintLive
        )
    }

    /// Whether it boots from the bundle's ext4 image (prepared once, before the runs): every VM
    /// but flint with a live root.
    pub fn uses_image(self) -> bool {
        self.is_vm() && self != System::FlintLive
    }
}

/// What `--systems` takes: a system, or `flint` for flint's two default rows.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Both flint rows: flint-restored, then flint-cold.
    Flint,
    /// flint restoring its cached warm snapshot (the default `flint run --oci-bundle`).
    FlintRestored,
    /// flint booting the kernel (`flint run --oci-bundle --cold`).
    FlintCold,
    /// flint booting with the bundle's rootfs/ shared live over virtio-fs (`flint run
    /// --oci-bundle --cold --live-root`; needs virtiofsd). Not in `flint`.
    FlintLive,
    /// The crun OCI runtime: the same bundle as a container.
    Crun,
    /// QEMU's microvm machine with KVM, booting what flint would boot.
    Qemu,
}

impl Selection {
    pub fn systems(self) -> &'static [System] {
        match self {
            Selection::Flint => &[System::FlintRestored, System::FlintCold],
            Selection::FlintRestored => &[System::FlintRestored],
            Selection::FlintCold => &[System::FlintCold],
            Selection::FlintLive => &[System::FlintLive],
            Selection::Crun => &[System::Crun],
            Selection::Qemu => &[System::Qemu],
        }
    }
}

/// The systems `selections` name, in their order, each once.
pub fn selected(selections: &[Selection]) -> Vec<System> {
    let mut systems: Vec<System> = Vec::new();
    for s in selections.iter().flat_map(|s| s.systems()) {
        if !systems.contains(s) {
            systems.push(*s);
        }
    }
    systems
}

/// How a system's table column, chart group and ratio are titled. Keys the bench does not
/// know (a report from another version) show as they are.
pub fn display_name(key: &str) -> &str {
    match key {
        "flint-restored" => "flint (restored)",
        "flint-cold" => "flint (cold boot)",
        "flint-live" => "flint (live root)",
        "qemu" => "QEMU microvm",
        "flint-clones" => "flint (clones of one snapshot)",
        "flint-snapshot" => "flint snapshot",
        "crun-checkpoint" => "crun checkpoint/restore",
        other => other,
    }
}

/// Where flint keeps its warm snapshots inside the image cache `image_cache`.
pub fn warm_dir(image_cache: &Path) -> PathBuf {
    image_cache.join("warm")
}

/// `program` as given if it has a slash, else the first match on `$PATH` (flint's own
/// look-up, which also finds virtiofsd).
pub use flint_vmm::config::find_program;

/// The first lines of `program --version`, joined (for the report); "unknown" if it will not
/// say.
pub fn version(program: &Path, lines: usize) -> String {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => return "unknown".into(),
    };
    let v: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(lines)
        .collect();
    if v.is_empty() {
        "unknown".into()
    } else {
        v.join("; ")
    }
}

/// crun's state directory root, from the `rundir:` line of `crun --version` (it depends on
/// the user and the build), else the default for root.
pub fn crun_rundir(crun: &Path) -> PathBuf {
    Command::new(crun)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| parse_rundir(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_else(|| "/run/crun".into())
}

fn parse_rundir(version_text: &str) -> Option<PathBuf> {
    version_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("rundir:"))
        .map(|d| PathBuf::from(d.trim()))
        .filter(|d| d.is_absolute())
}

/// Everything needed to build each system's command line.
pub struct Setup {
    pub bundle: PathBuf,
    pub memory_mib: u64,
    pub cpus: u32,
    pub flint: PathBuf,
    pub crun: PathBuf,
    pub qemu: PathBuf,
    pub kernel: Option<PathBuf>,
    /// flint's image cache: the bench's own, so that the image and the warm snapshot live and
    /// die with the bench.
    pub image_cache: PathBuf,
    /// Where crun's own log goes, one file per round (see [`Setup::crun_log`]).
    pub crun_logs: PathBuf,
    /// What QEMU boots: written from the bundle's [`flint_oci::GuestPlan`].
    pub vm: Option<VmFiles>,
}

/// The guest plan's pieces as QEMU takes them.
pub struct VmFiles {
    pub image: PathBuf,
    pub initramfs: PathBuf,
    pub kernel_args: String,
}

impl Setup {
    /// The container ID crun uses for `round`: unique per bench process and round.
    pub fn crun_id(round: u32) -> String {
        crun_id(round)
    }

    /// crun with its own log going to `log` (see [`Setup::crun_log`]).
    pub fn crun_command(&self, log: &Path) -> Command {
        let mut arg = std::ffi::OsString::from("--log=file:");
        arg.push(log);
        let mut c = Command::new(&self.crun);
        c.arg(arg).arg("--log-format=json");
        c
    }

    /// `flint run --restore DIR`, with the bench's image cache.
    pub fn flint_restore(&self, dir: &Path) -> Command {
        let mut c = Command::new(&self.flint);
        c.arg("run")
            .arg("--restore")
            .arg(dir)
            .env("FLINT_IMAGE_CACHE", &self.image_cache);
        c
    }

    /// crun's log for `round`. With `--log`, crun writes its own errors there instead of on
    /// stderr, which the workload shares: so a failing crun is told apart from a workload that
    /// fails (see [`crun_errors`]).
    pub fn crun_log(&self, round: u32) -> PathBuf {
        self.crun_logs.join(format!("crun-{round}.log"))
    }

    /// The command that runs the bundle once on `system`.
    pub fn command(&self, system: System, round: u32) -> Result<Command, BenchError> {
        let kernel = || {
            self.kernel.as_deref().ok_or(BenchError::Internal {
                what: "no kernel for a VM system",
            })
        };
        let mib = self.memory_mib.to_string();
        let cpus = self.cpus.to_string();
        let cmd = match system {
            System::FlintRestored | System::FlintCold | System::FlintLive => {
                let mut c = Command::new(&self.flint);
                c.arg("run")
                    .arg("--oci-bundle")
                    .arg(&self.bundle)
                    .arg("--kernel")
                    .arg(kernel()?)
                    .args(["--memory", &mib, "--cpus", &cpus, "--boot-timer"])
                    // The bench's own cache: the image and the warm snapshot (under warm/)
                    // live and die with the bench.
                    .env("FLINT_IMAGE_CACHE", &self.image_cache);
                // Without it flint restores the warm snapshot: the same command otherwise.
                if system != System::FlintRestored {
                    c.arg("--cold");
                }
                // The cold boot's command, with the rootfs/ shared live instead of its image
                // (flint would boot cold for a share anyway).
                if system == System::FlintLive {
                    c.arg("--live-root");
                }
                c
            }
            System::Crun => {
                let mut c = self.crun_command(&self.crun_log(round));
                c.arg("run")
                    .arg("--bundle")
                    .arg(&self.bundle)
                    .arg(Self::crun_id(round));
                c
            }
            System::Qemu => {
                let vm = self.vm.as_ref().ok_or(BenchError::Internal {
                    what: "no guest plan for QEMU",
                })?;
                let mut drive = std::ffi::OsString::from("id=root,file=");
                drive.push(&vm.image);
                drive.push(",format=raw,if=none,readonly=on");
                let mut c = Command::new(&self.qemu);
                c.args(["-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host"])
                    .args(["-m", &mib, "-smp", &cpus])
                    .args(["-nodefaults", "-no-user-config", "-display", "none"])
                    // ttyS0 is the workload's stdout. The guest's kernel console is on ttyS1,
                    // discarded; microvm creates only one serial port from -serial, so the
                    // second is an explicit device at COM2's address.
                    .args(["-no-reboot", "-serial", "stdio"])
                    .args(["-chardev", "null,id=com2"])
                    .args(["-device", "isa-serial,chardev=com2,iobase=0x2f8,irq=3"])
                    // The guest init reports the exit status on this port.
                    .args(["-device", "isa-debug-exit,iobase=0x501,iosize=1"])
                    .arg("-kernel")
                    .arg(kernel()?)
                    .arg("-initrd")
                    .arg(&vm.initramfs)
                    .args(["-append", &vm.kernel_args])
                    .arg("-drive")
                    .arg(drive)
                    .args(["-device", "virtio-blk-device,drive=root"]);
                c
            }
        };
        Ok(cmd)
    }
}

/// A command as a shell would show it: `VAR=value` for its environment, then argv.
pub fn describe(cmd: &Command) -> Vec<String> {
    let env = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())));
    env.chain(std::iter::once(
        cmd.get_program().to_string_lossy().into_owned(),
    ))
    .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
    .collect()
}

/// The workload's exit status as QEMU reports it. With `isa-debug-exit`, a guest that writes
/// `s` to the port makes QEMU exit with `(s << 1) | 1`; an even code means the guest did not
/// report a status (it reset, or QEMU itself failed).
pub fn qemu_workload_status(status: WaitStatus) -> Result<i32, String> {
    match status {
        WaitStatus::Exited(code) if code & 1 == 1 => Ok(code >> 1),
        WaitStatus::Exited(code) => Err(format!(
            "QEMU exited with code {code} without the guest reporting an exit status \
             (the guest reset or QEMU failed)"
        )),
        WaitStatus::Signaled(s) => Err(format!("QEMU was killed by signal {s}")),
    }
}

/// The `flint: guest booted in N us` line of `--boot-timer`.
pub fn parse_boot_us(stderr: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(stderr).lines().find_map(|l| {
        l.trim()
            .strip_prefix("flint: guest booted in ")?
            .strip_suffix(" us")?
            .trim()
            .parse()
            .ok()
    })
}

/// The error messages in crun's JSON log (one object per line, `{"msg", "level", "time"}`);
/// a line that is not such an object is taken as an error too.
pub fn crun_errors(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str::<serde_json::Value>(l) {
            Ok(v) if v["level"].as_str() != Some("error") => None,
            Ok(v) => Some(v["msg"].as_str().unwrap_or(l).to_string()),
            Err(_) => Some(l.to_string()),
        })
        .collect()
}

/// A crun container ID unique to this bench process: `flint-bench-PID-TAG`.
pub fn crun_id(tag: impl std::fmt::Display) -> String {
    format!("flint-bench-{}-{tag}", std::process::id())
}

/// Deletes a crun container when dropped, whatever happened to the run (errors ignored: a
/// container that was never created is nothing to delete).
pub struct CrunContainer<'a> {
    pub crun: &'a Path,
    pub id: String,
}

impl CrunContainer<'_> {
    /// `crun kill ID KILL` (errors ignored: the container may have ended already).
    pub fn kill(&self) {
        self.crun_quietly(&["kill", &self.id, "KILL"]);
    }

    fn crun_quietly(&self, args: &[&str]) {
        let _ = Command::new(self.crun)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for CrunContainer<'_> {
    fn drop(&mut self) {
        self.crun_quietly(&["delete", "--force", &self.id]);
    }
}

const CGROUP: &str = "/sys/fs/cgroup";

fn is_cgroup2(path: &str) -> io::Result<bool> {
    let c = CString::new(path).map_err(io::Error::other)?;
    // SAFETY: statfs is plain data, for which all zeros is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid statfs for the call to fill.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type == libc::CGROUP2_SUPER_MAGIC)
}

/// Makes sure crun finds a cgroup v2 hierarchy at /sys/fs/cgroup: crun refuses hosts with v1
/// or hybrid cgroups. On such a host, as root, this process moves to a private mount namespace
/// and mounts a cgroup2 there. `unshare(CLONE_NEWNS)` gives the new namespace to the calling
/// thread only (it separates that thread's filesystem context from the other threads'), so
/// every run must be spawned from this thread, as the bench does. Returns a note for the
/// report if it had to do this.
pub fn ensure_cgroup2() -> Result<Option<String>, BenchError> {
    let cgroup_err = |what: String| BenchError::Cgroup { what };
    match is_cgroup2(CGROUP) {
        Ok(true) => return Ok(None),
        Ok(false) => {}
        Err(e) => return Err(cgroup_err(format!("cannot read {CGROUP}: {e}"))),
    }
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        return Err(cgroup_err(format!(
            "crun needs cgroup v2 at {CGROUP} and this host has v1 or hybrid cgroups there: run \
             the bench as root (it then mounts a cgroup2 in a private mount namespace) or boot \
             the host with systemd.unified_cgroup_hierarchy=1"
        )));
    }
    let os = |what: &str| cgroup_err(format!("{what}: {}", io::Error::last_os_error()));
    // SAFETY: unshare and mount take no pointers other than these NUL-terminated strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(os(
                "cannot get a private mount namespace for crun (unshare)",
            ));
        }
        // Private, so that the cgroup2 mount below stays out of the host's namespace.
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(os("cannot make / private in the bench's mount namespace"));
        }
        if libc::mount(
            c"cgroup2".as_ptr(),
            c"/sys/fs/cgroup".as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(os("cannot mount a cgroup2 at /sys/fs/cgroup for crun"));
        }
    }
    match is_cgroup2(CGROUP) {
        Ok(true) => Ok(Some(format!(
            "The host has v1 or hybrid cgroups, which crun refuses: the bench ran crun in a \
             private mount namespace with a cgroup2 mounted at {CGROUP} (controllers bound to \
             v1 hierarchies are not available to it)."
        ))),
        _ => Err(cgroup_err(format!(
            "mounted a cgroup2 at {CGROUP} for crun, but it is still not one"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_exit_codes_decode_to_the_guest_status() {
        assert_eq!(qemu_workload_status(WaitStatus::Exited(1)), Ok(0));
        assert_eq!(qemu_workload_status(WaitStatus::Exited(7)), Ok(3));
        assert_eq!(qemu_workload_status(WaitStatus::Exited(255)), Ok(127));
        assert!(qemu_workload_status(WaitStatus::Exited(0)).is_err());
        assert!(qemu_workload_status(WaitStatus::Exited(2)).is_err());
        assert!(qemu_workload_status(WaitStatus::Signaled(9)).is_err());
    }

    #[test]
    fn boot_timer_line_is_found() {
        let err = b"some noise\nflint: guest booted in 81234 us\nmore\n";
        assert_eq!(parse_boot_us(err), Some(81234));
        assert_eq!(parse_boot_us(b"flint: guest booted in soon\n"), None);
        assert_eq!(parse_boot_us(b""), None);
    }

    #[test]
    fn crun_errors_come_from_its_log() {
        let log = concat!(
            r#"{"msg":"cgroup v1 is deprecated","level":"warning","time":"x"}"#,
            "\n",
            r#"{"msg":"setrlimit (RLIM_MEMLOCK): Operation not permitted","level":"error","time":"x"}"#,
            "\nnot json\n\n"
        );
        assert_eq!(
            crun_errors(log),
            [
                "setrlimit (RLIM_MEMLOCK): Operation not permitted",
                "not json"
            ]
        );
        assert!(crun_errors("").is_empty());
    }

    #[test]
    fn crun_rundir_comes_from_its_version_text() {
        let text = "crun version 1.8.1\ncommit: f8a0\nrundir: /run/user/0/crun\nspec: 1.0.0\n";
        assert_eq!(parse_rundir(text), Some("/run/user/0/crun".into()));
        assert_eq!(parse_rundir("crun version 1.0\n"), None);
    }

    fn setup() -> Setup {
        Setup {
            bundle: "/b".into(),
            memory_mib: 256,
            cpus: 2,
            flint: "/usr/bin/flint".into(),
            crun: "crun".into(),
            qemu: "qemu-system-x86_64".into(),
            kernel: Some("/k/vmlinux".into()),
            image_cache: "/w/images".into(),
            crun_logs: "/w".into(),
            vm: Some(VmFiles {
                image: "/w/images/abc.ext4".into(),
                initramfs: "/w/initramfs.cpio".into(),
                kernel_args: "console=ttyS1 quiet".into(),
            }),
        }
    }

    #[test]
    fn commands_are_as_documented() {
        let s = setup();
        let restored = describe(&s.command(System::FlintRestored, 1).unwrap());
        assert_eq!(
            restored.join(" "),
            "FLINT_IMAGE_CACHE=/w/images /usr/bin/flint run --oci-bundle /b --kernel /k/vmlinux \
             --memory 256 --cpus 2 --boot-timer"
        );
        let cold = describe(&s.command(System::FlintCold, 1).unwrap());
        assert_eq!(
            cold.join(" "),
            "FLINT_IMAGE_CACHE=/w/images /usr/bin/flint run --oci-bundle /b --kernel /k/vmlinux \
             --memory 256 --cpus 2 --boot-timer --cold"
        );
        let crun = describe(&s.command(System::Crun, 3).unwrap());
        assert_eq!(
            crun,
            [
                "crun",
                "--log=file:/w/crun-3.log",
                "--log-format=json",
                "run",
                "--bundle",
                "/b",
                &Setup::crun_id(3)
            ]
            .map(String::from)
        );
        let qemu = describe(&s.command(System::Qemu, 1).unwrap());
        let at = |flag: &str| {
            let i = qemu.iter().position(|a| a == flag).unwrap();
            qemu[i + 1].as_str()
        };
        assert_eq!(at("-m"), "256");
        assert_eq!(at("-smp"), "2");
        assert_eq!(at("-append"), "console=ttyS1 quiet");
        assert_eq!(
            at("-drive"),
            "id=root,file=/w/images/abc.ext4,format=raw,if=none,readonly=on"
        );
        assert_eq!(at("-kernel"), "/k/vmlinux");
        assert_eq!(at("-serial"), "stdio");
        assert!(qemu.contains(&"isa-serial,chardev=com2,iobase=0x2f8,irq=3".to_string()));
        assert_eq!(at("-initrd"), "/w/initramfs.cpio");
    }

    #[test]
    fn the_two_flint_rows_differ_only_in_cold() {
        let s = setup();
        let restored = describe(&s.command(System::FlintRestored, 1).unwrap());
        let mut cold = describe(&s.command(System::FlintCold, 1).unwrap());
        assert_eq!(cold.pop().as_deref(), Some("--cold"));
        assert_eq!(cold, restored);
        assert!(!restored.contains(&"--cold".to_string()));
        // Both use the bench's cache, where the restored row's snapshot is kept.
        assert_eq!(warm_dir(&s.image_cache), PathBuf::from("/w/images/warm"));
    }

    #[test]
    fn the_live_row_is_the_cold_boot_with_a_live_root() {
        let s = setup();
        let cold = describe(&s.command(System::FlintCold, 1).unwrap());
        let mut live = describe(&s.command(System::FlintLive, 1).unwrap());
        assert_eq!(live.pop().as_deref(), Some("--live-root"));
        assert_eq!(live, cold);
    }

    #[test]
    fn systems_have_keys_and_display_names() {
        let all = [
            System::FlintRestored,
            System::FlintCold,
            System::FlintLive,
            System::Crun,
            System::Qemu,
        ];
        let keys = all.map(System::key);
        assert_eq!(
            keys,
            ["flint-restored", "flint-cold", "flint-live", "crun", "qemu"]
        );
        assert_eq!(
            keys.map(display_name),
            [
                "flint (restored)",
                "flint (cold boot)",
                "flint (live root)",
                "crun",
                "QEMU microvm"
            ]
        );
        // A key from an older report (flint had one row, a cold boot) shows as it is.
        assert_eq!(display_name("flint"), "flint");
        assert_eq!(all.map(System::is_vm), [true, true, true, false, true]);
        assert_eq!(all.map(System::is_flint), [true, true, true, false, false]);
        // The live root has no image.
        assert_eq!(
            all.map(System::uses_image),
            [true, true, false, false, true]
        );
    }

    #[test]
    fn flint_selects_both_flint_rows_once() {
        use Selection as S;
        assert_eq!(
            selected(&[S::Flint, S::Crun]),
            [System::FlintRestored, System::FlintCold, System::Crun]
        );
        assert_eq!(
            selected(&[S::Qemu, S::FlintCold, S::Flint, S::Qemu]),
            [System::Qemu, System::FlintCold, System::FlintRestored]
        );
        assert!(selected(&[]).is_empty());
        // The live root only when named: `flint` is the two default rows.
        assert_eq!(
            selected(&[S::Flint, S::FlintLive, S::FlintCold]),
            [System::FlintRestored, System::FlintCold, System::FlintLive]
        );
        assert_eq!(selected(&[S::FlintLive]), [System::FlintLive]);
    }
}
