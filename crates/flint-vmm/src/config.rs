//! The VM's configuration, validated once; the CLI (and later an API or OCI bundle) builds it.

use std::path::{Path, PathBuf};

/// What a guest gets when the user gives no `--cmdline`: the serial console, reboot through the
/// i8042 (flint's power-off path), and no probing for hardware a microVM does not have.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";
pub const DEFAULT_VCPUS: u32 = 1;
pub const DEFAULT_MEMORY_MIB: u64 = 128;

/// A disk: a raw image attached as a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    /// What the guest reads as the disk's serial (VIRTIO_BLK_T_GET_ID, /sys/block/vdX/serial).
    pub serial: Option<String>,
}

/// A network interface: a virtio-net device on an existing TAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub tap: String,
    /// None: a stable MAC derived from the TAP's name.
    pub mac: Option<crate::devices::virtio::net::Mac>,
    /// The link's MTU, told to the guest's driver (None: its default, 1500).
    pub mtu: Option<u16>,
}

impl std::str::FromStr for NetConfig {
    type Err = String;

    /// `tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,mtu=N]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut tap, mut mac, mut mtu) = (None, None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("tap", "")) => return Err("tap= needs a TAP device name".into()),
                Some(("tap", name)) => tap = Some(name.to_string()),
                Some(("mac", m)) => mac = Some(m.parse()?),
                Some(("mtu", m)) => {
                    // 68: the least IPv4 allows (and Linux's virtio-net driver takes).
                    match m.parse::<u16>() {
                        Ok(n) if n >= 68 => mtu = Some(n),
                        _ => return Err(format!("mtu={m}: expected a number from 68 to 65535")),
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown net option '{part}' (expected tap=NAME, mac=XX:XX:XX:XX:XX:XX, mtu=N)"
                    ));
                }
            }
        }
        Ok(NetConfig {
            tap: tap.ok_or("missing tap=NAME")?,
            mac,
            mtu,
        })
    }
}

/// A directory (or one file) of the host shared with the guest over virtio-fs, which the
/// guest mounts by its tag (`mount -t virtiofs TAG /mnt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    pub tag: String,
    pub source: FsSource,
}

/// Who serves a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsSource {
    /// flint starts a virtiofsd for this host path (a directory, or a file shared alone as the
    /// share's only entry); read-only shares refuse every write.
    Path { path: PathBuf, read_only: bool },
    /// A virtiofsd (or another vhost-user-fs backend) the user started, listening here.
    Socket(PathBuf),
}

/// virtio-fs's tag field is 36 bytes, not NUL-terminated when full.
pub const MAX_FS_TAG_LEN: usize = 36;

impl std::str::FromStr for FsConfig {
    type Err = String;

    /// `tag=TAG,path=DIR[,ro]` or `tag=TAG,socket=PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut tag, mut path, mut socket, mut read_only) = (None, None, None, false);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("tag", t)) => {
                    if t.is_empty()
                        || t.len() > MAX_FS_TAG_LEN
                        || !t.bytes().all(|b| b.is_ascii_graphic())
                    {
                        return Err(format!(
                            "tag '{t}' must be 1 to {MAX_FS_TAG_LEN} printable ASCII characters"
                        ));
                    }
                    tag = Some(t.to_string());
                }
                Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
                Some(("socket", p)) if !p.is_empty() => socket = Some(PathBuf::from(p)),
                None if part == "ro" => read_only = true,
                _ => {
                    return Err(format!(
                        "unknown fs option '{part}' (expected tag=TAG, path=DIR, ro, socket=PATH)"
                    ));
                }
            }
        }
        let tag = tag.ok_or("missing tag=TAG (the name the guest mounts it by)")?;
        let source = match (path, socket) {
            (Some(path), None) => FsSource::Path { path, read_only },
            (None, Some(_)) if read_only => {
                return Err(
                    "ro applies to path= shares (a socket's virtiofsd decides for itself: give it --readonly)"
                        .into(),
                )
            }
            (None, Some(socket)) => FsSource::Socket(socket),
            (Some(_), Some(_)) => return Err("give either path= or socket=, not both".into()),
            (None, None) => return Err("missing path=DIR (or socket=PATH)".into()),
        };
        Ok(FsConfig { tag, source })
    }
}

/// A virtio-vsock device (Firecracker's "hybrid vsock"): the guest's CID, and the Unix socket
/// flint listens on for host clients (`CONNECT <port>\n`); a guest connection to host port P
/// goes to the socket `<uds_path>_<P>`. See [`crate::devices::virtio::vsock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID: 3 to 4294967294 (0-2 are reserved, -1 means any).
    pub cid: u32,
    /// Made by flint (it must not exist) and removed when flint exits.
    pub uds_path: PathBuf,
}

impl std::str::FromStr for VsockConfig {
    type Err = String;

    /// `cid=N,socket=PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut cid, mut uds_path) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("cid", n)) => {
                    let min = crate::devices::virtio::vsock::MIN_GUEST_CID;
                    cid = Some(
                        n.parse::<u32>()
                            .ok()
                            .filter(|&c| c >= min && c < u32::MAX)
                            .ok_or_else(|| {
                                format!(
                                    "cid '{n}' must be a number from {min} to {} (0-2 are \
                                     reserved)",
                                    u32::MAX - 1
                                )
                            })?,
                    );
                }
                Some(("socket", p)) if !p.is_empty() => uds_path = Some(PathBuf::from(p)),
                _ => {
                    return Err(format!(
                        "unknown vsock option '{part}' (expected cid=N, socket=PATH)"
                    ));
                }
            }
        }
        Ok(VsockConfig {
            cid: cid.ok_or("missing cid=N (the guest's context ID, 3 or more)")?,
            uds_path: uds_path.ok_or("missing socket=PATH (the Unix socket flint listens on)")?,
        })
    }
}

/// At most this many virtio devices: as many as the machine has MMIO windows and interrupt
/// lines for (see `alloc`).
pub const MAX_VIRTIO_DEVICES: usize = crate::alloc::VIRTIO_DEVICE_CAPACITY;
/// virtio-blk's GET_ID answer is 20 bytes.
pub const MAX_SERIAL_LEN: usize = 20;

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// `path=FILE[,ro][,serial=ID]`, or just `FILE`.
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.contains('=') {
            return if s.is_empty() {
                Err("empty disk path".into())
            } else {
                Ok(DiskConfig {
                    path: s.into(),
                    read_only: false,
                    serial: None,
                })
            };
        }
        let (mut path, mut read_only, mut serial) = (None, false, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
                Some(("serial", id)) => {
                    if id.len() > MAX_SERIAL_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(format!(
                            "serial '{id}' must be at most {MAX_SERIAL_LEN} printable ASCII characters"
                        ));
                    }
                    serial = Some(id.to_string());
                }
                None if part == "ro" => read_only = true,
                _ => {
                    return Err(format!(
                        "unknown disk option '{part}' (expected path=FILE, ro, serial=ID)"
                    ));
                }
            }
        }
        Ok(DiskConfig {
            path: path.ok_or("missing path=FILE")?,
            read_only,
            serial,
        })
    }
}

/// An initramfs: a file the user named, or one flint made (an OCI bundle's init and spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initrd {
    File(PathBuf),
    Generated(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<Initrd>,
    /// The full kernel command line.
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Report the time from flint's start to the guest's boot-timer write.
    pub boot_timer: bool,
    /// Disks in guest order (/dev/vda, /dev/vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// The first disk is the root filesystem (`root=/dev/vda` on the command line).
    pub root_on_first_disk: bool,
    /// Network interfaces in guest order (eth0, eth1, ...).
    pub nets: Vec<NetConfig>,
    /// Describe the machine in ACPI tables too (the MP table and the command line's device
    /// announcements are there either way).
    pub acpi: bool,
    /// Shared directories (virtio-fs), after the disks and NICs.
    pub fs: Vec<FsConfig>,
    /// A vsock device, after everything else.
    pub vsock: Option<VsockConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--cpus must be at least 1")]
    NoVcpus,
    #[error("--cpus {requested} is more than flint can give a VM on this host (at most {max})")]
    TooManyVcpus { requested: u32, max: u32 },
    #[error("--memory must be at least 1 MiB")]
    NoMemory,
    #[error("--memory {requested} MiB is more than this host's {host} MiB of RAM")]
    TooMuchMemory { requested: u64, host: u64 },
    #[error(
        "{count} disks, network interfaces, shares and vsock devices: flint attaches at most {max}"
    )]
    TooManyDevices { count: usize, max: usize },
    #[error("TAP '{0}' is given to more than one --net")]
    SharedTap(String),
    #[error("--fs tag '{0}' is given to more than one share")]
    SharedFsTag(String),
    #[error(
        "{path} is attached more than once and at least once writable: the guest would corrupt it"
    )]
    SharedWritableDisk { path: String },
    #[error("{what} {path}: {reason}")]
    BadFile {
        what: &'static str,
        path: String,
        reason: String,
    },
}

/// Builds the command line: `cmdline` replaces the default, `append` extends it.
pub fn compose_cmdline(cmdline: Option<&str>, append: Option<&str>) -> String {
    let mut s = cmdline.unwrap_or(DEFAULT_CMDLINE).trim().to_string();
    if let Some(extra) = append.map(str::trim).filter(|a| !a.is_empty()) {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(extra);
    }
    s
}

/// What a host input named by the user may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A regular file (a kernel, an initrd).
    File,
    /// A regular file or a block device (a disk).
    Disk,
}

/// Opens a file the user named (`--kernel`, `--initrd`, a disk) without ever blocking, and
/// only if it is the kind of file it should be; the one place every such input is opened.
///
/// The path may be a symlink (`/boot/vmlinuz` usually is), so it is followed: the user chose it.
/// The open itself is non-blocking (opening a FIFO for reading would wait for a writer forever)
/// and the type is checked on the opened descriptor, so a path swapped between the look-up and
/// the open is caught too. A FIFO, socket, directory or character device (`/dev/null`) is refused
/// with a reason; the returned file is back in blocking mode for the loaders' reads.
pub fn open_input(path: &Path, kind: InputKind, write: bool) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // The type first, by path: a device node is refused without opening it at all.
    let meta = std::fs::metadata(path).map_err(|e| io_reason(&e))?;
    check_input_type(&meta.file_type(), kind)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_reason(&e))?;
    let meta = file.metadata().map_err(|e| io_reason(&e))?;
    check_input_type(&meta.file_type(), kind)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let cleared = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(io_reason(&std::io::Error::last_os_error()));
    }
    Ok(file)
}

fn check_input_type(t: &std::fs::FileType, kind: InputKind) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() || (kind == InputKind::Disk && t.is_block_device()) {
        return Ok(());
    }
    let wanted = match kind {
        InputKind::File => "a regular file",
        InputKind::Disk => "a disk image file or a block device",
    };
    Err(format!("is {}, not {wanted}", file_type_name(t)))
}

/// What a file of this type is called in an error message ("is a FIFO (named pipe), not …").
pub fn file_type_name(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Checks that `path` names a readable input of its kind, and returns its metadata.
pub fn check_file(
    what: &'static str,
    path: &Path,
    kind: InputKind,
) -> Result<std::fs::Metadata, ConfigError> {
    let bad = |reason: String| ConfigError::BadFile {
        what,
        path: path.display().to_string(),
        reason,
    };
    let file = open_input(path, kind, false).map_err(bad)?;
    file.metadata().map_err(|e| bad(io_reason(&e)))
}

pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// A share's host path must be a directory or a regular file, its socket a socket: anything
/// else is a typo better caught before a virtiofsd starts.
fn check_share(f: &FsConfig) -> Result<(), ConfigError> {
    use std::os::unix::fs::FileTypeExt;
    let (path, socket) = match &f.source {
        FsSource::Path { path, .. } => (path, false),
        FsSource::Socket(path) => (path, true),
    };
    let bad = |reason: String| ConfigError::BadFile {
        what: "--fs",
        path: path.display().to_string(),
        reason,
    };
    let t = std::fs::metadata(path)
        .map_err(|e| bad(io_reason(&e)))?
        .file_type();
    match (socket, t.is_dir() || t.is_file(), t.is_socket()) {
        (false, true, _) | (true, _, true) => Ok(()),
        (false, false, _) => Err(bad(format!(
            "is {}, not a directory or a regular file",
            file_type_name(&t)
        ))),
        (true, _, false) => Err(bad(
            "is not a socket (socket= names the vhost-user socket of a running virtiofsd)".into(),
        )),
    }
}

/// `program` as given if it has a slash, else the first match on `$PATH`; `None` if there is
/// no such executable file.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// Total RAM of this host in MiB, from /proc/meminfo.
pub fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl VmConfig {
    /// Sizes: vCPUs against `max_vcpus` (what this host's KVM and flint's MP table allow),
    /// memory against the host's. The one place a VM without memory is refused.
    pub fn validate_limits(&self, max_vcpus: u32) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus > max_vcpus {
            return Err(ConfigError::TooManyVcpus {
                requested: self.vcpus,
                max: max_vcpus,
            });
        }
        if self.memory_mib == 0 {
            return Err(ConfigError::NoMemory);
        }
        if let Some(host) = host_memory_mib() {
            if self.memory_mib > host {
                return Err(ConfigError::TooMuchMemory {
                    requested: self.memory_mib,
                    host,
                });
            }
        }
        Ok(())
    }

    /// The files and devices named: kernel, initrd, disks, TAPs (no KVM needed).
    pub fn validate_inputs(&self) -> Result<(), ConfigError> {
        check_file("--kernel", &self.kernel, InputKind::File)?;
        if let Some(Initrd::File(initrd)) = &self.initrd {
            check_file("--initrd", initrd, InputKind::File)?;
        }
        self.validate_devices()
    }

    fn validate_devices(&self) -> Result<(), ConfigError> {
        use std::os::unix::fs::MetadataExt;
        let count =
            self.disks.len() + self.nets.len() + self.fs.len() + usize::from(self.vsock.is_some());
        if count > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices {
                count,
                max: MAX_VIRTIO_DEVICES,
            });
        }
        for (i, n) in self.nets.iter().enumerate() {
            if self.nets[..i].iter().any(|m| m.tap == n.tap) {
                return Err(ConfigError::SharedTap(n.tap.clone()));
            }
        }
        for (i, f) in self.fs.iter().enumerate() {
            if self.fs[..i].iter().any(|g| g.tag == f.tag) {
                return Err(ConfigError::SharedFsTag(f.tag.clone()));
            }
            check_share(f)?;
        }
        let mut seen: Vec<((u64, u64), bool)> = Vec::new();
        for (i, d) in self.disks.iter().enumerate() {
            let what = if i == 0 && self.root_on_first_disk {
                "--rootfs"
            } else {
                "--disk"
            };
            let meta = check_file(what, &d.path, InputKind::Disk)?;
            let id = (meta.dev(), meta.ino());
            if let Some((_, ro)) = seen.iter().find(|(s, _)| *s == id) {
                if !(*ro && d.read_only) {
                    return Err(ConfigError::SharedWritableDisk {
                        path: d.path.display().to_string(),
                    });
                }
            }
            seen.push((id, d.read_only));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig {
            kernel: PathBuf::from("/proc/self/exe"),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            vcpus: 1,
            memory_mib: 128,
            boot_timer: false,
            disks: vec![],
            root_on_first_disk: false,
            nets: vec![],
            acpi: true,
            fs: vec![],
            vsock: None,
        }
    }

    #[test]
    fn programs_are_found_on_path_or_by_path() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/bin/sh")).is_some());
        assert_eq!(find_program(Path::new("flint-no-such-tool")), None);
        assert_eq!(find_program(Path::new("./flint-no-such-tool")), None);
    }

    #[test]
    fn fs_option_syntax() {
        let f: FsConfig = "tag=data,path=/srv/data,ro".parse().unwrap();
        assert_eq!(f.tag, "data");
        assert_eq!(
            f.source,
            FsSource::Path {
                path: "/srv/data".into(),
                read_only: true
            }
        );
        let f: FsConfig = "socket=/run/v.sock,tag=x".parse().unwrap();
        assert_eq!(f.source, FsSource::Socket("/run/v.sock".into()));
        for (bad, why) in [
            ("path=/a", "missing tag"),
            ("tag=a", "missing path"),
            ("tag=a,path=/a,socket=/s", "not both"),
            ("tag=a,socket=/s,ro", "ro applies to path="),
            ("tag=,path=/a", "printable"),
            ("tag=a b,path=/a", "printable"),
            (&format!("tag={},path=/a", "t".repeat(37)), "1 to 36"),
            ("tag=a,path=/a,cache=always", "unknown fs option"),
        ] {
            let e = bad.parse::<FsConfig>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let c = VmConfig {
            fs: vec![
                "tag=a,path=/".parse().unwrap(),
                "tag=a,path=/tmp".parse().unwrap(),
            ],
            ..cfg()
        };
        assert_eq!(
            c.validate_inputs(),
            Err(ConfigError::SharedFsTag("a".into()))
        );
    }

    #[test]
    fn vsock_option_syntax() {
        let v: VsockConfig = "cid=3,socket=/run/v.sock".parse().unwrap();
        assert_eq!(
            v,
            VsockConfig {
                cid: 3,
                uds_path: "/run/v.sock".into()
            }
        );
        let v: VsockConfig = "socket=v.sock,cid=4294967294".parse().unwrap();
        assert_eq!(v.cid, u32::MAX - 1);
        for (bad, why) in [
            ("cid=3", "missing socket=PATH"),
            ("socket=/v", "missing cid=N"),
            ("cid=2,socket=/v", "from 3 to 4294967294"),
            ("cid=4294967295,socket=/v", "from 3 to 4294967294"),
            ("cid=x,socket=/v", "cid 'x'"),
            ("cid=3,socket=", "unknown vsock option 'socket='"),
            ("cid=3,socket=/v,port=5", "unknown vsock option 'port=5'"),
            ("", "unknown vsock option ''"),
        ] {
            let e = bad.parse::<VsockConfig>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // The vsock device counts against the device limit.
        let exe = DiskConfig {
            path: "/proc/self/exe".into(),
            read_only: true,
            serial: None,
        };
        let c = VmConfig {
            disks: vec![exe; MAX_VIRTIO_DEVICES],
            vsock: Some(v),
            ..cfg()
        };
        assert!(matches!(
            c.validate_inputs(),
            Err(ConfigError::TooManyDevices { .. })
        ));
    }

    #[test]
    fn net_option_syntax_and_duplicates() {
        let n: NetConfig = "tap=tap0,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac.unwrap().to_string(), "52:54:00:12:34:56");
        assert!("tap=tap0".parse::<NetConfig>().unwrap().mac.is_none());
        assert_eq!(
            "tap=t,mtu=1450".parse::<NetConfig>().unwrap().mtu,
            Some(1450)
        );
        assert_eq!("tap=t".parse::<NetConfig>().unwrap().mtu, None);
        for bad in [
            "tap=t,mtu=67",
            "tap=t,mtu=65536",
            "tap=t,mtu=x",
            "tap=t,mtu=",
        ] {
            assert!(
                bad.parse::<NetConfig>()
                    .unwrap_err()
                    .contains("from 68 to 65535"),
                "{bad}"
            );
        }
        assert!("mac=52:54:00:12:34:56"
            .parse::<NetConfig>()
            .unwrap_err()
            .contains("missing tap"));
        assert!("tap=t,mac=zz"
            .parse::<NetConfig>()
            .unwrap_err()
            .contains("not a MAC"));
        assert!("tap=t,speed=10"
            .parse::<NetConfig>()
            .unwrap_err()
            .contains("unknown net option"));
        let c = VmConfig {
            nets: vec!["tap=a".parse().unwrap(), "tap=a".parse().unwrap()],
            ..cfg()
        };
        assert_eq!(c.validate_inputs(), Err(ConfigError::SharedTap("a".into())));
    }

    #[test]
    fn disk_option_syntax() {
        let d: DiskConfig = "path=/a.img,ro,serial=abc".parse().unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/a.img".into(),
                read_only: true,
                serial: Some("abc".into())
            }
        );
        let d: DiskConfig = "/b.img".parse().unwrap();
        assert!(!d.read_only && d.serial.is_none());
        assert!("ro".parse::<DiskConfig>().is_ok()); // a file named "ro"
        assert!("path=/a,bogus"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("unknown disk option"));
        assert!("ro,serial=x"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("missing path"));
        assert!("path=/a,serial=has space".parse::<DiskConfig>().is_err());
        assert!("path=/a,serial=123456789012345678901"
            .parse::<DiskConfig>()
            .is_err());
        assert!("".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn the_same_image_twice_and_writable_is_rejected() {
        let disk = |path: &str, read_only| DiskConfig {
            path: path.into(),
            read_only,
            serial: None,
        };
        let exe = "/proc/self/exe";
        let c = VmConfig {
            disks: vec![disk(exe, true), disk(exe, true)],
            ..cfg()
        };
        assert_eq!(c.validate_inputs(), Ok(()));
        let c = VmConfig {
            disks: vec![disk(exe, true), disk(exe, false)],
            ..cfg()
        };
        assert!(matches!(
            c.validate_inputs(),
            Err(ConfigError::SharedWritableDisk { .. })
        ));
        let c = VmConfig {
            disks: vec![disk("/nonexistent.img", false)],
            root_on_first_disk: true,
            ..cfg()
        };
        assert_eq!(
            c.validate_inputs().unwrap_err().to_string(),
            "--rootfs /nonexistent.img: no such file"
        );
        let c = VmConfig {
            disks: vec![disk(exe, true); 20],
            ..cfg()
        };
        assert!(matches!(
            c.validate_inputs(),
            Err(ConfigError::TooManyDevices { .. })
        ));
    }

    #[test]
    fn inputs_are_regular_files_opened_without_blocking() {
        let dir = std::env::temp_dir().join(format!("flint-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reason = |p: &Path, kind, write| open_input(p, kind, write).unwrap_err();
        for kind in [InputKind::File, InputKind::Disk] {
            for write in [false, true] {
                assert!(reason(&fifo, kind, write).contains("is a FIFO"));
                assert!(reason(Path::new("/dev/null"), kind, write).contains("character device"));
                assert!(reason(&dir, kind, write).starts_with("is a directory"));
            }
        }
        // A symlink to a regular file is followed, and the file reads blocking as usual.
        let file = dir.join("vmlinux");
        std::fs::write(&file, b"abc").unwrap();
        let link = dir.join("vmlinuz");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let f = open_input(&link, InputKind::File, false).unwrap();
        // SAFETY: F_GETFL only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        let meta = check_file("--kernel", &link, InputKind::File).unwrap();
        assert_eq!(meta.len(), 3);
        assert_eq!(
            check_file("--initrd", &fifo, InputKind::File)
                .unwrap_err()
                .to_string(),
            format!(
                "--initrd {}: is a FIFO (named pipe), not a regular file",
                fifo.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cmdline_default_replace_append() {
        assert_eq!(compose_cmdline(None, None), DEFAULT_CMDLINE);
        assert_eq!(compose_cmdline(Some("a=1"), Some(" b ")), "a=1 b");
        assert_eq!(
            compose_cmdline(None, Some("quiet")),
            format!("{DEFAULT_CMDLINE} quiet")
        );
        assert_eq!(compose_cmdline(Some(""), Some("x")), "x");
    }

    #[test]
    fn validation_errors() {
        assert_eq!(cfg().validate_limits(4), Ok(()));
        assert_eq!(cfg().validate_inputs(), Ok(()));
        let c = VmConfig { vcpus: 0, ..cfg() };
        assert_eq!(c.validate_limits(4), Err(ConfigError::NoVcpus));
        let c = VmConfig { vcpus: 5, ..cfg() };
        assert_eq!(
            c.validate_limits(4),
            Err(ConfigError::TooManyVcpus {
                requested: 5,
                max: 4
            })
        );
        let c = VmConfig {
            memory_mib: 0,
            ..cfg()
        };
        assert_eq!(c.validate_limits(4), Err(ConfigError::NoMemory));
        let c = VmConfig {
            memory_mib: 1 << 40,
            ..cfg()
        };
        assert!(matches!(
            c.validate_limits(4),
            Err(ConfigError::TooMuchMemory { .. })
        ));
        let c = VmConfig {
            kernel: "/nonexistent/vmlinux".into(),
            ..cfg()
        };
        assert_eq!(
            c.validate_inputs().unwrap_err().to_string(),
            "--kernel /nonexistent/vmlinux: no such file"
        );
        let c = VmConfig {
            initrd: Some(Initrd::File("/".into())),
            ..cfg()
        };
        assert!(c
            .validate_inputs()
            .unwrap_err()
            .to_string()
            .contains("directory"));
    }
}
