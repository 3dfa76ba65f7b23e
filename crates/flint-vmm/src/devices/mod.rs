//! Emulated devices.
pub mod guest_ports;
pub mod irq;
pub mod legacy;
pub mod manager;
pub mod virtio;
