//! A TAP device opened through /dev/net/tun: frames with a virtio-net header in front
//! (IFF_VNET_HDR), non-blocking, offloads set from what the guest accepts.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
pub(crate) const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
const IFNAMSIZ: usize = 16;
/// VNET_HDR_LEN as the int TUNSETVNETHDRSZ reads.
const HDR_LEN: libc::c_int = 12;
const _: () = assert!(HDR_LEN as usize == VNET_HDR_LEN);

pub const TUN_F_CSUM: u32 = 0x01;
pub const TUN_F_TSO4: u32 = 0x02;
pub const TUN_F_TSO6: u32 = 0x04;

#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TapError {
    #[error("'{0}' is not a valid network interface name (1 to 15 characters, no '/' or spaces)")]
    BadName(String),
    #[error(
        "there is no network interface '{0}': create the TAP first, e.g. \
         `ip tuntap add dev {0} mode tap && ip link set {0} up`"
    )]
    NoSuchInterface(String),
    #[error("network interface '{0}' is not a TAP device")]
    NotTap(String),
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(String),
    #[error(
        "cannot attach to TAP '{0}': permission denied (flint needs CAP_NET_ADMIN, or the TAP \
         must be owned by this user: `ip tuntap add dev {0} mode tap user $USER`)"
    )]
    Permission(String),
    #[error("cannot attach to TAP '{0}': it is busy (another process has it open)")]
    Busy(String),
    #[error(
        "cannot attach to TAP '{0}': {1} (a multi-queue TAP or one created with other flags \
         does not fit; create it with `ip tuntap add dev {0} mode tap`)"
    )]
    Attach(String, String),
}

pub struct Tap {
    fd: OwnedFd,
    /// The kernel accepted offloads (checksum, TSO) on this TAP.
    offloads: bool,
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: these TUN ioctls take an integer argument by value.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Checks `name` as a network interface name.
fn check_name(name: &str) -> Result<(), TapError> {
    if name.is_empty()
        || name.len() >= IFNAMSIZ
        || name.contains(['/', ' ', '\0'])
        || name == "."
        || name == ".."
    {
        return Err(TapError::BadName(name.into()));
    }
    Ok(())
}

/// Opens /dev/net/tun and attaches it to the TAP `name` (TUNSETIFF), creating the TAP if
/// there is none, with flint's flags (no packet info, a virtio-net header on each frame).
fn attach(name: &str) -> Result<OwnedFd, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| TapError::OpenTun(e.to_string()))?;
    let fd: OwnedFd = file.into();
    let mut req = IfReq {
        name: [0; IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may update) an ifreq, which `req` is, laid out as C's.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission(name.into()),
            Some(libc::EBUSY) => TapError::Busy(name.into()),
            // An interface by that name that is not a TAP (or is a TUN).
            Some(libc::EINVAL) => TapError::NotTap(name.into()),
            _ => TapError::Attach(name.into(), e.to_string()),
        });
    }
    Ok(fd)
}

impl Tap {
    /// Makes the TAP `name` with flint's flags, persistent (it stays when no process has it
    /// open, until deleted or its network namespace goes), unless it exists already (then it
    /// must be a TAP that fits, as for [`Tap::open`]).
    pub fn make_persistent(name: &str) -> Result<(), TapError> {
        check_name(name)?;
        let fd = attach(name)?;
        ioctl_int(fd.as_raw_fd(), TUNSETPERSIST, 1)
            .map_err(|e| TapError::Attach(name.into(), e.to_string()))
    }

    /// Attaches to the existing TAP `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        // TUNSETIFF would create a missing TAP; flint only attaches to one the operator made.
        // Looked up in this thread's network namespace (sysfs shows the one it was mounted in,
        // which is not the one a jailed flint joined with --netns).
        let cname = std::ffi::CString::new(name).map_err(|_| TapError::BadName(name.into()))?;
        // SAFETY: if_nametoindex reads the NUL-terminated string and returns 0 if there is none.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(TapError::NoSuchInterface(name.into()));
        }
        let fd = attach(name)?;
        // The header in front of each frame is virtio 1.x's (with num_buffers): 12 bytes.
        let hdr_len: libc::c_int = HDR_LEN;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr_len) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(TapError::Attach(name.into(), e.to_string()));
        }
        let offloads = ioctl_int(
            fd.as_raw_fd(),
            TUNSETOFFLOAD,
            (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) as _,
        )
        .and_then(|_| ioctl_int(fd.as_raw_fd(), TUNSETOFFLOAD, 0))
        .is_ok();
        Ok(Tap { fd, offloads })
    }

    /// Whether this TAP takes checksum and TSO offloads.
    pub fn supports_offloads(&self) -> bool {
        self.offloads
    }

    /// Tells the TAP which offloads the reader (the guest) accepts.
    pub fn set_offload(&self, flags: u32) -> std::io::Result<()> {
        ioctl_int(self.fd.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
