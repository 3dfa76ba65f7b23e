//! Warm starts: `flint run --oci-bundle` restores a guest that booted before there was a
//! workload, instead of booting one.
//!
//! The warm guest is flint's kernel with an initramfs holding the init and a marker
//! ([`initramfs`]), no spec, and two empty read-only disks: the root image (vda) and the spec
//! disk (vdb). Its init tells the VMM it is ready (port 0x503) and waits for both disks to
//! have a size; the VMM snapshots it there, once per [`key`], into the cache. A run restores
//! that snapshot with the bundle's image as vda and a [`spec_disk`] as vdb, both announced to
//! the guest by a config-change interrupt; the init reads the spec, the host's entropy and
//! time from vdb, and goes on exactly as a cold boot does from there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::initramfs::{Cpio, Node, TooLarge};

/// The warm snapshots' directory inside the image cache.
pub const WARM_DIR: &str = "warm";
/// The empty file both disks of the warm guest are made from.
pub const PLACEHOLDER: &str = "empty";
/// The spec disk's header: its size, and the magic the init checks.
pub const HEADER_SIZE: usize = 512;
const MAGIC: &[u8; 8] = b"FLNTWARM";
/// The host entropy a restored guest gets.
pub const SEED_BYTES: usize = SEED_LEN as usize;
const SEED_LEN: u32 = 32;
/// The largest spec the init takes from a spec disk (its WARM_SPEC_MAX).
pub const MAX_SPEC: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("the run spec is {0} bytes; a warm start takes at most {MAX_SPEC} (use --cold)")]
    SpecTooLarge(usize),
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("--kernel {0}: cannot read its metadata")]
    Kernel(String, #[source] std::io::Error),
    #[error(
        "the warm snapshot {path} {why}, not one flint made for you: remove it (flint makes it \
         again)"
    )]
    Unsafe { path: String, why: String },
}

/// The warm guest's initramfs: the init and the marker that makes it wait.
pub fn initramfs() -> Result<Vec<u8>, TooLarge> {
    let mut c = Cpio::new();
    c.add("dev", 0o755, Node::Dir)?
        .add("dev/console", 0o600, Node::CharDev(5, 1))?
        .add("mnt", 0o755, Node::Dir)?
        .add("flint", 0o755, Node::Dir)?
        .add("flint/warm", 0o644, Node::File(b""))?
        .add("init", 0o755, Node::File(crate::INIT))?;
    Ok(c.finish())
}

/// What a warm snapshot depends on: a different value of any of these needs another.
#[derive(Debug, Clone)]
pub struct WarmGuest<'a> {
    pub kernel: &'a Path,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub acpi: bool,
    /// The kernel command line flint is given (before its own device declarations).
    pub cmdline: &'a str,
}

/// The snapshot's name in the cache: a hash of flint's version, its init, the kernel (path,
/// size, modification time, inode: replacing the file changes the key) and the machine.
pub fn key(guest: &WarmGuest) -> Result<String, WarmError> {
    use std::os::unix::fs::MetadataExt;
    let name = || guest.kernel.display().to_string();
    let path = guest
        .kernel
        .canonicalize()
        .map_err(|e| WarmError::Kernel(name(), e))?;
    let meta = std::fs::metadata(&path).map_err(|e| WarmError::Kernel(name(), e))?;
    let mut h = Sha256::new();
    h.update(b"flint warm guest 1\0");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(env!("FLINT_INIT_SHA256").as_bytes());
    h.update(path.as_os_str().as_encoded_bytes());
    for n in [
        meta.len(),
        meta.dev(),
        meta.ino(),
        u64::try_from(meta.mtime()).unwrap_or(0),
        u64::try_from(meta.mtime_nsec()).unwrap_or(0),
        u64::from(guest.vcpus),
        guest.memory_mib,
        u64::from(guest.acpi),
    ] {
        h.update(n.to_le_bytes());
    }
    h.update(guest.cmdline.as_bytes());
    let digest = h.finalize();
    Ok(digest[..16].iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks that the warm snapshot in `dir` (the directory, its state and memory files) is the
/// caller's own and that no one else can change it: it becomes a guest's memory. Files that
/// are missing are not checked (the restore says what is missing).
pub fn check_private(dir: &Path) -> Result<(), WarmError> {
    let files = [
        dir.to_path_buf(),
        dir.join(flint_vmm::snapshot::STATE_FILE),
        dir.join(flint_vmm::snapshot::MEMORY_FILE),
    ];
    for (i, path) in files.iter().enumerate() {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            continue;
        };
        let bad = |why: String| WarmError::Unsafe {
            path: path.display().to_string(),
            why,
        };
        let right_type = if i == 0 { m.is_dir() } else { m.is_file() };
        if !right_type {
            return Err(bad("is not a plain directory or file (a symlink?)".into()));
        }
        if let Some(why) = crate::image::not_private(&m) {
            return Err(bad(why));
        }
    }
    Ok(())
}

/// Where the warm snapshot with this key lives in `cache`.
pub fn dir(cache: &Path, key: &str) -> PathBuf {
    cache.join(WARM_DIR).join(key)
}

/// The spec disk's contents: the header (magic, lengths, the host's time, the seed), then
/// the spec, padded to whole sectors.
pub fn spec_disk(
    spec: &[u8],
    seed: &[u8; SEED_BYTES],
    now: Duration,
) -> Result<Vec<u8>, WarmError> {
    let len = u32::try_from(spec.len())
        .ok()
        .filter(|_| spec.len() <= MAX_SPEC)
        .ok_or(WarmError::SpecTooLarge(spec.len()))?;
    let mut d = vec![0u8; HEADER_SIZE];
    d[..8].copy_from_slice(MAGIC);
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..16].copy_from_slice(&SEED_LEN.to_le_bytes());
    d[16..24].copy_from_slice(&now.as_secs().to_le_bytes());
    d[24..32].copy_from_slice(&u64::from(now.subsec_nanos()).to_le_bytes());
    d[32..32 + SEED_BYTES].copy_from_slice(seed);
    d.extend_from_slice(spec);
    d.resize(d.len().div_ceil(512) * 512, 0);
    Ok(d)
}

/// `SEED_BYTES` from the kernel's RNG.
pub fn seed() -> Result<[u8; SEED_BYTES], WarmError> {
    let mut s = [0u8; SEED_BYTES];
    // SAFETY: getrandom writes at most `s.len()` bytes into `s`.
    let n = unsafe { libc::getrandom(s.as_mut_ptr().cast(), s.len(), 0) };
    if usize::try_from(n).ok() != Some(s.len()) {
        return Err(WarmError::Io(
            "getrandom for the guest's seed",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(s)
}

/// The spec disk's file: in memory, never on the host's disks (see
/// [`flint_vmm::devices::virtio::block::in_memory_file`]).
pub fn memory_file(bytes: &[u8]) -> Result<(std::fs::File, PathBuf), WarmError> {
    flint_vmm::devices::virtio::block::in_memory_file(c"flint-spec", bytes)
        .map_err(|e| WarmError::Io("making the spec disk", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_disk_has_the_layout_the_init_reads() {
        let seed = [7u8; SEED_BYTES];
        let d = spec_disk(b"spec!", &seed, Duration::new(1_700_000_000, 42)).unwrap();
        assert_eq!(d.len(), 1024, "header and one sector");
        assert_eq!(&d[..8], b"FLNTWARM");
        assert_eq!(u32::from_le_bytes(d[8..12].try_into().unwrap()), 5);
        assert_eq!(u32::from_le_bytes(d[12..16].try_into().unwrap()), 32);
        assert_eq!(
            u64::from_le_bytes(d[16..24].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(u64::from_le_bytes(d[24..32].try_into().unwrap()), 42);
        assert_eq!(&d[32..64], &seed);
        assert!(d[64..512].iter().all(|&b| b == 0));
        assert_eq!(&d[512..517], b"spec!");
        let big = vec![b'x'; MAX_SPEC + 1];
        assert!(matches!(
            spec_disk(&big, &seed, Duration::ZERO),
            Err(WarmError::SpecTooLarge(_))
        ));
    }

    #[test]
    fn the_key_changes_with_what_the_snapshot_depends_on() {
        let dir = std::env::temp_dir().join(format!("flint-warm-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("vmlinux");
        std::fs::write(&k, b"kernel").unwrap();
        let g = WarmGuest {
            kernel: &k,
            vcpus: 1,
            memory_mib: 128,
            acpi: true,
            cmdline: "console=ttyS1",
        };
        let base = key(&g).unwrap();
        assert_eq!(base.len(), 32);
        assert_eq!(key(&g).unwrap(), base, "stable");
        for other in [
            WarmGuest {
                vcpus: 2,
                ..g.clone()
            },
            WarmGuest {
                memory_mib: 256,
                ..g.clone()
            },
            WarmGuest {
                acpi: false,
                ..g.clone()
            },
            WarmGuest {
                cmdline: "console=ttyS1 quiet",
                ..g.clone()
            },
        ] {
            assert_ne!(key(&other).unwrap(), base);
        }
        // A kernel replaced by another file (a new inode) is another snapshot.
        let k2 = dir.join("vmlinux.new");
        std::fs::write(&k2, b"kernel").unwrap();
        std::fs::rename(&k2, &k).unwrap();
        assert_ne!(key(&g).unwrap(), base);
        assert!(matches!(
            key(&WarmGuest {
                kernel: &dir.join("missing"),
                ..g.clone()
            }),
            Err(WarmError::Kernel(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_warm_initramfs_has_the_marker_and_no_spec() {
        // The init's own text names both paths; the cold initramfs has one entry more.
        let count =
            |cpio: &[u8], name: &[u8]| cpio.windows(name.len()).filter(|w| *w == name).count();
        let warm = initramfs().unwrap();
        let cold = crate::guest_initramfs(b"spec").unwrap();
        assert_eq!(
            count(&warm, b"flint/warm\0"),
            count(&cold, b"flint/warm\0") + 1
        );
        assert_eq!(
            count(&warm, b"flint/spec\0") + 1,
            count(&cold, b"flint/spec\0")
        );
    }

    #[test]
    fn only_a_snapshot_of_ones_own_that_no_one_else_can_change_is_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("flint-warm-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            check_private(&dir).is_ok(),
            "missing files are the restore's to report"
        );
        let state = dir.join("state");
        std::fs::write(&state, b"x").unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private(&dir).is_ok());
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o662)).unwrap();
        let e = check_private(&dir).unwrap_err().to_string();
        assert!(e.contains("is writable by other users (mode 0662)"), "{e}");
        assert!(e.ends_with("remove it (flint makes it again)"), "{e}");
        std::fs::remove_file(&state).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &state).unwrap();
        let e = check_private(&dir).unwrap_err().to_string();
        assert!(e.contains("a symlink"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_memory_file_reads_back_through_its_path() {
        let (file, path) = memory_file(b"0123").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123");
        drop(file);
    }
}
