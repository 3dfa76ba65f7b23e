//! OCI runtime bundles as microVMs: `flint run --oci-bundle DIR`.
//!
//! The bundle's `config.json` is parsed and checked ([`bundle`]); what flint cannot honour is
//! refused. Its `rootfs/` becomes an ext4 image, cached by content and attached read-only
//! ([`image`]); the guest gets a writable tmpfs layer over it. With a live root
//! ([`PrepareOptions::live_root`]) the rootfs is shared over virtio-fs instead, as are the
//! host paths of bind mounts ([`Share`]). A generated initramfs ([`initramfs`]) carries
//! flint's own small init and the run spec ([`spec`]); the init mounts the root, sets up the
//! process as a container runtime would (with the bundle's seccomp profile, compiled by
//! [`seccomp`]) and reports its exit status on the exit-status port, which becomes flint's
//! exit code. What the bundle asks of the VM itself ([`Resources`], a network namespace) is
//! in the [`GuestPlan`] for the runtime that starts it. While the workload runs, the init's
//! agent takes signals for it and starts other processes in its container over virtio-vsock
//! ([`agent`]).

pub mod agent;
#[cfg(test)]
mod agent_tests;
pub mod bundle;
pub mod image;
#[cfg(test)]
mod init_tests;
pub mod initramfs;
pub mod network;
pub mod seccomp;
pub mod spec;
pub mod warm;

use std::path::{Path, PathBuf};

pub use bundle::{Bundle, Resources};
use initramfs::{Cpio, Node};

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{bundle}")]
    Bundle {
        bundle: String,
        #[source]
        source: bundle::BundleError,
    },
    #[error("{bundle}")]
    Image {
        bundle: String,
        #[source]
        source: image::ImageError,
    },
    #[error("{bundle}")]
    Spec {
        bundle: String,
        #[source]
        source: spec::NulInSpec,
    },
    #[error("{bundle}")]
    Initramfs {
        bundle: String,
        #[source]
        source: initramfs::TooLarge,
    },
}

/// flint's guest init, built from `src/init/` by build.rs.
const INIT: &[u8] = include_bytes!(env!("FLINT_INIT_BIN"));

/// The guest kernel's arguments for a bundle run. The kernel's console is the second UART
/// (the user's stderr) and shows only emergencies, so the workload's output is its own; a
/// panic reboots at once, which flint reports as a guest that ended without a status.
pub const KERNEL_ARGS: &str = "console=ttyS1 8250.nr_uarts=2 loglevel=1 reboot=k panic=-1 \
     pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// A host path the VM must share with the guest over virtio-fs, as tag `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The virtio-fs tag the guest mounts it by (at most 36 bytes).
    pub tag: String,
    /// The host path, canonical (symlinks resolved).
    pub path: PathBuf,
    /// Share it read-only: the guest cannot write through it whatever it mounts.
    pub read_only: bool,
    /// The path is a regular file: share it alone, in a directory of its own, at the share's
    /// root under its base name (the guest binds that name).
    pub file: bool,
}

/// The tag of a live root's share.
pub const ROOT_TAG: &str = "flint-root";

/// How to run a bundle, beyond what its config says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrepareOptions {
    /// Share the bundle's rootfs directory with the guest over virtio-fs (tag [`ROOT_TAG`])
    /// as its root, instead of an image under a tmpfs overlay: the workload's writes land in
    /// the rootfs on the host, as with crun, and no image is built.
    pub live_root: bool,
    /// Prepared for the OCI runtime (`flint create`), whose caller (podman, containerd) made
    /// the bundle: `root.path` may lead outside the bundle directory (their storage's mount),
    /// and errors name the bundle as such rather than as `--oci-bundle`.
    pub runtime: bool,
}

/// What a VMM needs to run a bundle: the root image or shares, the run spec (in an initramfs
/// for a boot, see [`GuestPlan::initramfs`]) and the kernel arguments.
#[derive(Debug)]
pub struct GuestPlan {
    /// How errors name the bundle: `--oci-bundle DIR` or, for the runtime, `bundle DIR`.
    bundle: String,
    /// The cached ext4 image of the bundle's rootfs: attach it read-only as the first disk.
    /// None for a live root, which is the share tagged [`ROOT_TAG`] (no disk then).
    pub image: Option<PathBuf>,
    /// The host paths to attach as virtio-fs devices, each with its tag: the live root's and
    /// the bind mounts' sources.
    pub shares: Vec<Share>,
    /// The run spec (what a warm start gives the guest on its spec disk).
    pub spec: Vec<u8>,
    /// Kernel command line for the guest (console on the second UART, quiet), without the
    /// `virtio_mmio.device=` declarations, which the VMM adds.
    pub kernel_args: String,
    /// What the bundle's `linux.resources` asks of the VM: its memory and vCPUs, the VMM's
    /// CPU weight on the host.
    pub resources: Resources,
    /// The network namespace to run the VMM in (the bundle's `network` namespace path).
    pub netns: Option<PathBuf>,
}

/// Reads and checks the bundle, builds (or finds) its image in `cache`, and returns the plan.
pub fn prepare(dir: &Path, cache: &Path) -> Result<GuestPlan, OciError> {
    prepare_with(dir, cache, &PrepareOptions::default())
}

/// [`prepare`] with `options`: with a live root, no image is built or looked up (`cache` is
/// not used) and the rootfs becomes the first share.
pub fn prepare_with(
    dir: &Path,
    cache: &Path,
    options: &PrepareOptions,
) -> Result<GuestPlan, OciError> {
    let name = || {
        let flag = if options.runtime {
            "bundle"
        } else {
            "--oci-bundle"
        };
        format!("{flag} {}", dir.display())
    };
    let mut bundle =
        Bundle::load_with(dir, options.runtime).map_err(|source| OciError::Bundle {
            bundle: name(),
            source,
        })?;
    if options.live_root {
        bundle.share_root();
    }
    // The spec first: a bad one is found before an image is built.
    let spec = bundle.spec.encode().map_err(|source| OciError::Spec {
        bundle: name(),
        source,
    })?;
    let image = if options.live_root {
        None
    } else {
        let image = image::image_for(&bundle.rootfs, cache).map_err(|source| OciError::Image {
            bundle: name(),
            source,
        })?;
        Some(image)
    };
    Ok(GuestPlan {
        bundle: name(),
        image,
        shares: bundle.shares,
        spec,
        kernel_args: KERNEL_ARGS.to_string(),
        resources: bundle.resources,
        netns: bundle.netns,
    })
}

impl GuestPlan {
    /// The initramfs a booted guest needs: flint's init and the run spec, an uncompressed
    /// cpio archive (built on demand: a warm start needs none, and it copies the whole init).
    pub fn initramfs(&self) -> Result<Vec<u8>, OciError> {
        guest_initramfs(&self.spec).map_err(|source| OciError::Initramfs {
            bundle: self.bundle.clone(),
            source,
        })
    }
}

/// The initramfs: the init, the spec, and a console node for the kernel to open before init.
pub fn guest_initramfs(spec: &[u8]) -> Result<Vec<u8>, initramfs::TooLarge> {
    let mut c = Cpio::new();
    c.add("dev", 0o755, Node::Dir)?
        .add("dev/console", 0o600, Node::CharDev(5, 1))?
        .add("mnt", 0o755, Node::Dir)?
        .add("flint", 0o755, Node::Dir)?
        .add("flint/spec", 0o644, Node::File(spec))?
        .add("init", 0o755, Node::File(INIT))?;
    Ok(c.finish())
}

/// No place for the image cache: not root, and neither `$XDG_CACHE_HOME` nor `$HOME` is set.
#[derive(Debug, thiserror::Error)]
#[error("--oci-bundle needs an image cache of your own, and neither XDG_CACHE_HOME nor HOME is set: set FLINT_IMAGE_CACHE to a directory")]
pub struct NoCacheDir;

/// The image cache: `$FLINT_IMAGE_CACHE`, else `/var/cache/flint/images` for root, else
/// `$XDG_CACHE_HOME/flint/images` (or `~/.cache/flint/images`). Never a shared directory such
/// as /tmp: what is in the cache becomes a guest's root.
pub fn default_cache_dir() -> Result<PathBuf, NoCacheDir> {
    // SAFETY: geteuid has no failure mode.
    let euid = unsafe { libc::geteuid() };
    cache_dir_for(euid, |name| std::env::var_os(name))
}

/// [`default_cache_dir`] for the user `euid` with the environment `env`.
fn cache_dir_for(
    euid: u32,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<PathBuf, NoCacheDir> {
    let set = |name| env(name).filter(|v| !v.is_empty());
    if let Some(d) = set("FLINT_IMAGE_CACHE") {
        return Ok(d.into());
    }
    if euid == 0 {
        return Ok("/var/cache/flint/images".into());
    }
    // The XDG spec: a relative XDG_CACHE_HOME is to be ignored.
    let base = set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| set("HOME").map(|h| Path::new(&h).join(".cache")))
        .ok_or(NoCacheDir)?;
    Ok(base.join("flint/images"))
}

/// Where flint looks for a guest kernel when `--kernel` is not given with `--oci-bundle`.
pub const DEFAULT_KERNELS: &[&str] =
    &["/usr/local/share/flint/vmlinux", "/usr/share/flint/vmlinux"];

/// The guest kernel to use: `$FLINT_KERNEL`, else the first of [`DEFAULT_KERNELS`] that exists.
pub fn default_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("FLINT_KERNEL") {
        return Some(k.into());
    }
    DEFAULT_KERNELS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_never_in_a_shared_directory() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = env(&[
            ("FLINT_IMAGE_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ]);
        assert_eq!(cache_dir_for(1000, all).unwrap(), Path::new("/c"));
        assert_eq!(cache_dir_for(0, all).unwrap(), Path::new("/c"));
        let xdg = env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(
            cache_dir_for(0, xdg).unwrap(),
            Path::new("/var/cache/flint/images")
        );
        assert_eq!(
            cache_dir_for(1000, xdg).unwrap(),
            Path::new("/x/flint/images")
        );
        let home = env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")]);
        assert_eq!(
            cache_dir_for(1000, home).unwrap(),
            Path::new("/h/.cache/flint/images")
        );
        // No home: an error saying what to set, not /tmp.
        for vars in [&[][..], &[("HOME", ""), ("FLINT_IMAGE_CACHE", "")][..]] {
            let e = cache_dir_for(1000, env(vars)).unwrap_err().to_string();
            assert_eq!(e, "--oci-bundle needs an image cache of your own, and neither XDG_CACHE_HOME nor HOME is set: set FLINT_IMAGE_CACHE to a directory");
        }
    }
}
