//! The host side of a disk: a raw image file, opened read-only or read-write and locked so that
//! no two flint processes write the same image, with positioned vectored I/O.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::SECTOR_SIZE;
use crate::config::{io_reason, open_input, InputKind};
use crate::devices::virtio::iovec::GuestIovecs;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("{path}: {reason}")]
    Open { path: String, reason: String },
    #[error("{path}: size {size} is not a multiple of 512 bytes")]
    Unaligned { path: String, size: u64 },
    #[error("{path}: the image is in use by another process (it holds a lock on it)")]
    Locked { path: String },
}

/// An anonymous in-memory file holding `bytes`, and a path that opens it (`/proc/self/fd/N`,
/// valid while the file is open): a disk that never touches the host's disks.
pub fn in_memory_file(name: &std::ffi::CStr, bytes: &[u8]) -> std::io::Result<(File, PathBuf)> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: the name is a NUL-terminated string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok((file, path))
}

pub struct DiskImage {
    file: File,
    size: u64,
    read_only: bool,
    discard: bool,
}

impl DiskImage {
    pub fn open(path: &Path, read_only: bool) -> Result<DiskImage, DiskError> {
        let name = path.display().to_string();
        let open_err = |e: std::io::Error| DiskError::Open {
            path: name.clone(),
            reason: io_reason(&e),
        };
        // A FIFO, directory or character device is refused there, without blocking.
        let file =
            open_input(path, InputKind::Disk, !read_only).map_err(|reason| DiskError::Open {
                path: name.clone(),
                reason,
            })?;
        // Writers take the image exclusively, readers share it: another flint (or anyone using
        // flock) writing the same image would corrupt the guest's filesystem.
        let op = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } != 0 {
            return Err(DiskError::Locked { path: name });
        }
        let meta = file.metadata().map_err(open_err)?;
        // A block device's size is where it ends; its metadata says 0.
        let size = if meta.file_type().is_block_device() {
            (&file).seek(SeekFrom::End(0)).map_err(open_err)?
        } else {
            meta.len()
        };
        if size % SECTOR_SIZE != 0 {
            return Err(DiskError::Unaligned { path: name, size });
        }
        let discard = !read_only && punch_hole_supported(&file, size);
        Ok(DiskImage {
            file,
            size,
            read_only,
            discard,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the host file can deallocate ranges (for DISCARD and WRITE_ZEROES).
    pub fn supports_discard(&self) -> bool {
        self.discard
    }

    /// Reads into the guest buffers `bufs` from `offset`; returns bytes read.
    pub fn read_vectored_at(&self, bufs: &GuestIovecs, offset: u64) -> std::io::Result<usize> {
        let count = bufs.count()?;
        // SAFETY: `bufs` holds iovecs into guest RAM, each checked to be mapped for its length,
        // and its borrow of guest memory keeps them mapped for this call; the fd is ours.
        check(unsafe {
            libc::preadv(
                self.file.as_raw_fd(),
                bufs.as_slice().as_ptr(),
                count,
                offset as libc::off_t,
            )
        })
    }

    /// Writes the guest buffers `bufs` at `offset`; returns bytes written.
    pub fn write_vectored_at(&self, bufs: &GuestIovecs, offset: u64) -> std::io::Result<usize> {
        let count = bufs.count()?;
        // SAFETY: as for `read_vectored_at`; pwritev only reads the buffers.
        check(unsafe {
            libc::pwritev(
                self.file.as_raw_fd(),
                bufs.as_slice().as_ptr(),
                count,
                offset as libc::off_t,
            )
        })
    }

    /// Makes every completed write durable on the host (fdatasync).
    pub fn flush(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Deallocates `len` bytes at `offset`; they read back as zeros.
    pub fn punch_hole(&self, offset: u64, len: u64) -> std::io::Result<()> {
        fallocate(
            &self.file,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    }

    /// Zeroes `len` bytes at `offset`, keeping them allocated where the host can; falls back to
    /// punching a hole (which also reads back as zeros).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> std::io::Result<()> {
        fallocate(
            &self.file,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
        .or_else(|_| self.punch_hole(offset, len))
    }
}

/// A byte count from a syscall that returns -1 and sets errno on failure.
fn check(n: isize) -> std::io::Result<usize> {
    usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
}

fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fallocate on a descriptor we own, with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Probes hole punching past the end of the file, where it cannot change any data.
fn punch_hole_supported(file: &File, size: u64) -> bool {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        size,
        SECTOR_SIZE,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn image(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("flint-disk-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn bad_images_are_clear_errors() {
        assert!(matches!(
            DiskImage::open(Path::new("/nonexistent.img"), false),
            Err(DiskError::Open { reason, .. }) if reason == "no such file"
        ));
        assert!(matches!(
            DiskImage::open(Path::new("/"), true),
            Err(DiskError::Open { reason, .. }) if reason.contains("is a directory")
        ));
        assert!(matches!(
            DiskImage::open(Path::new("/dev/null"), false),
            Err(DiskError::Open { reason, .. }) if reason.contains("character device")
        ));
        let p = image("odd", &[0; 1000]);
        assert!(matches!(
            DiskImage::open(&p, false),
            Err(DiskError::Unaligned { size: 1000, .. })
        ));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn writers_exclude_each_other_readers_share() {
        let p = image("lock", &[0; 4096]);
        let w = DiskImage::open(&p, false).unwrap();
        assert!(matches!(
            DiskImage::open(&p, false),
            Err(DiskError::Locked { .. })
        ));
        assert!(matches!(
            DiskImage::open(&p, true),
            Err(DiskError::Locked { .. })
        ));
        drop(w);
        let r1 = DiskImage::open(&p, true).unwrap();
        let _r2 = DiskImage::open(&p, true).unwrap();
        assert!(r1.read_only() && !r1.supports_discard());
        assert!(matches!(
            DiskImage::open(&p, false),
            Err(DiskError::Locked { .. })
        ));
        std::fs::remove_file(p).unwrap();
    }
}
