//! Emulated devices.
pub mod irq;
pub mod legacy;
pub mod virtio;
