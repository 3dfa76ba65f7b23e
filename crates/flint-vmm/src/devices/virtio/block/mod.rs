//! virtio-blk (virtio 1.1 §5.2) over a raw disk image.
//!
//! `disk` is the host side (the image file and positioned I/O straight into guest memory),
//! `request` turns one untrusted descriptor chain into a checked request and runs it, and
//! `device` is the virtio device: features, config space, queue processing.

pub mod device;
pub mod disk;
pub mod request;

pub use device::{Block, BlockWorker};
pub use disk::{in_memory_file, DiskError, DiskImage};

pub const SECTOR_SHIFT: u64 = 9;
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// Feature bits (§5.2.3).
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
pub const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types (§5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

/// Request status byte values.
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Length of the GET_ID answer.
pub const VIRTIO_BLK_ID_BYTES: usize = 20;

#[cfg(test)]
mod tests;
