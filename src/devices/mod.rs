//! Emulated devices.
pub mod exit_status;
pub mod irq;
pub mod legacy;
pub mod virtio;
