//! virtio-net (virtio 1.1 §5.1) on a TAP device.
//!
//! `tap` opens the host side; `device` is the virtio device: one RX and one TX queue, the MAC
//! and link status in its config space, mergeable RX buffers, and checksum/TSO offloads passed
//! through the TAP's virtio-net header where the host supports them.

pub mod device;
pub mod tap;

pub use device::{Net, NetStats, NetWorker};
pub use tap::{Tap, TapError};

use std::os::fd::RawFd;

/// The header in front of every frame (virtio 1.x `virtio_net_hdr`, with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame with its header: a 64 KiB TSO segment plus Ethernet and VLAN headers.
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + 65550;

/// Feature bits (§5.1.3).
pub const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
pub const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
/// The device says the link's MTU (config space `mtu`), which the driver takes.
pub const VIRTIO_NET_F_MTU: u64 = 1 << 3;
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
pub const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
pub const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
pub const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
pub const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;

pub const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// `virtio_net_hdr` flags and GSO types (§5.1.6).
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;

/// Where frames come from and go to: a TAP, or (in tests) any descriptor that keeps frame
/// boundaries, such as a SOCK_SEQPACKET socket.
pub trait Backend: Send + Sync {
    fn fd(&self) -> RawFd;
    /// Whether the backend takes the checksum/TSO offloads.
    fn supports_offloads(&self) -> bool;
    /// Tells the backend which offloads the guest accepts (TUN_F_* bits).
    fn set_offload(&self, flags: u32) -> std::io::Result<()>;
}

impl Backend for Tap {
    fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
    fn supports_offloads(&self) -> bool {
        Tap::supports_offloads(self)
    }
    fn set_offload(&self, flags: u32) -> std::io::Result<()> {
        Tap::set_offload(self, flags)
    }
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || format!("'{s}' is not a MAC address like 52:54:00:12:34:56");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (b, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if m[0] & 1 != 0 {
            return Err(format!(
                "MAC {s} is a multicast address; a NIC needs a unicast one"
            ));
        }
        if m == [0; 6] {
            return Err(format!("MAC {s} is all zeros"));
        }
        Ok(Mac(m))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Mac {
    /// A stable, locally administered unicast MAC for a TAP name: the same TAP gives the guest
    /// the same MAC on every boot (FNV-1a of the name).
    pub fn for_tap(name: &str) -> Mac {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        // FNV's low bytes barely change with the last character: mix before using them.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        let b = h.to_le_bytes();
        // 0x06: locally administered (bit 1), unicast (bit 0 clear).
        Mac([0x06, b[0], b[1], b[2], b[3], b[4]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            "52:54:00:12:34:56".parse::<Mac>().unwrap().0,
            [0x52, 0x54, 0, 0x12, 0x34, 0x56]
        );
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:5g",
            "525400123456",
            "52:54:00:12:34:567",
            "",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert!("01:00:5e:00:00:01"
            .parse::<Mac>()
            .unwrap_err()
            .contains("multicast"));
        assert!("00:00:00:00:00:00".parse::<Mac>().is_err());
        assert_eq!(
            Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]).to_string(),
            "52:54:00:12:34:56"
        );
    }

    #[test]
    fn default_mac_is_stable_local_unicast() {
        let a = Mac::for_tap("tap0");
        assert_eq!(a, Mac::for_tap("tap0"));
        let b = Mac::for_tap("tap1");
        // Names one character apart give MACs that differ in most bytes.
        assert!(
            a.0.iter().zip(b.0).filter(|(x, y)| **x != *y).count() >= 4,
            "{a} vs {b}"
        );
        assert_eq!(a.0[0] & 3, 2);
    }
}

#[cfg(test)]
mod device_tests;
