//! Fast tier (root, no KVM): a container's network handed to the VM
//! (`flint_oci::network::connect`), in a real network namespace made as podman's is — an
//! `eth0` with the container's MAC, address and default route. This host has no veth driver,
//! so `eth0` is a TAP the test holds (writing to it is a frame arriving on the container's
//! interface, reading from it a frame leaving it): frames must cross between it and flint's
//! TAP both ways, each exactly once, also after a second connect (a container restarted in
//! the same namespace).

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use flint_oci::network::{connect, interface, NetworkError, TAP_NAME};
use flint_vmm::devices::virtio::net::tap::Tap;

/// A named network namespace (`ip netns`), deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(test: &str) -> Option<Netns> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            common::skip(test, "no /dev/net/tun");
            return None;
        }
        // SAFETY: geteuid has no failure mode.
        if unsafe { libc::geteuid() } != 0 {
            common::skip(test, "needs root (network namespaces and TAPs)");
            return None;
        }
        let name = format!("flint-test-{}-{test}", std::process::id());
        let name = name[..name.len().min(60)].to_string();
        let ns = Netns(name);
        ns.ip(&["netns", "add", &ns.0]);
        Some(ns)
    }

    /// `ip ARGS`, which must succeed.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip -n NS ARGS`.
    fn ip_in(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// Moves the calling thread into the namespace (setns is per thread).
    fn enter(&self) {
        let file = File::open(format!("/run/netns/{}", self.0)).unwrap();
        // SAFETY: setns with an open namespace fd, for this thread only.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0);
    }

    /// A container's `eth0` as podman makes it (a TAP here, see the top), its MAC given.
    fn container_interface(&self) {
        self.ip_in(&["link", "set", "lo", "up"]);
        self.ip_in(&["tuntap", "add", "dev", "eth0", "mode", "tap"]);
        // An overlay network's MTU (flannel's VXLAN, say), below Ethernet's 1500.
        self.ip_in(&["link", "set", "eth0", "address", MAC, "mtu", "1450", "up"]);
        self.ip_in(&["addr", "add", "10.88.0.5/16", "dev", "eth0"]);
        self.ip_in(&["route", "add", "default", "via", "10.88.0.1", "dev", "eth0"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const MAC: &str = "02:42:0a:58:00:05";

/// Opens the TAP `name` as `ip tuntap add` made it (no packet info, no virtio-net header).
fn attach_plain(name: &str) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .unwrap();
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: 0x0002 | 0x1000, // IFF_TAP | IFF_NO_PI
        pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is, laid out as C's.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), 0x4004_54ca, &mut req) };
    assert_eq!(
        r,
        0,
        "attaching to {name}: {}",
        std::io::Error::last_os_error()
    );
    file
}

/// An Ethernet frame of a local experimental EtherType (0x88b5), tagged with `tag`.
fn frame(tag: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6]; // broadcast
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, tag]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend(std::iter::repeat_n(tag, 60));
    f
}

/// The frames tagged `tag` read from `from` (within 2 s, and 300 ms after the first, for any
/// copies), after skipping `skip` bytes of each (the virtio-net header on flint's TAP).
/// Others (IPv6 router solicitations, say) are ignored.
fn frames_tagged(from: &mut File, skip: usize, tag: u8) -> usize {
    let want = frame(tag);
    let mut deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = 0;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        match from.read(&mut buf) {
            Ok(n) if n >= skip && buf[skip..n] == want[..] => {
                seen += 1;
                if seen == 1 {
                    deadline = Instant::now() + Duration::from_millis(300);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("reading a TAP: {e}"),
        }
    }
    seen
}

/// Until a frame crosses each way: a TAP's queue starts once the kernel has seen its carrier
/// come up (when a reader attaches), which it does asynchronously; frames before are dropped.
fn wait_until_joined(eth0: &mut File, tap: &mut File) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut with_header = vec![0u8; 12];
    with_header.extend_from_slice(&frame(0x70));
    let mut buf = [0u8; 2048];
    let (mut in_ok, mut out_ok) = (false, false);
    while !(in_ok && out_ok) {
        assert!(Instant::now() < deadline, "no frame crossed in 10 s");
        if !in_ok {
            eth0.write_all(&frame(0x70)).unwrap();
        }
        if !out_ok {
            tap.write_all(&with_header).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(n) = tap.read(&mut buf) {
            in_ok |= n > 12 && buf[12..n] == frame(0x70)[..];
        }
        while let Ok(n) = eth0.read(&mut buf) {
            out_ok |= buf[..n] == frame(0x70)[..];
        }
    }
}

/// Frames cross both ways between the container's interface and flint's TAP, once each.
fn assert_joined(eth0: &mut File, tap: &mut File, tag: u8) {
    wait_until_joined(eth0, tap);
    eth0.write_all(&frame(tag)).unwrap();
    assert_eq!(
        frames_tagged(tap, 12, tag),
        1,
        "a frame arriving on eth0 leaves through {TAP_NAME}, once"
    );
    let mut with_header = vec![0u8; 12];
    with_header.extend_from_slice(&frame(tag + 1));
    tap.write_all(&with_header).unwrap();
    assert_eq!(
        frames_tagged(eth0, 0, tag + 1),
        1,
        "a frame the guest sends leaves through eth0, once"
    );
}

#[test]
fn a_containers_interface_is_joined_to_flints_tap_both_ways() {
    let test = "a_containers_interface_is_joined_to_flints_tap_both_ways";
    let Some(ns) = Netns::new(test) else {
        return;
    };
    ns.container_interface();
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let ns = Netns(name);
        ns.enter();
        // What connect would join, found without making anything (`--net`'s refusal).
        assert_eq!(interface().expect("interface").as_deref(), Some("eth0"));
        let links = Command::new("ip")
            .args(["-n", &ns.0, "-o", "link", "show"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&links.stdout).contains(TAP_NAME),
            "interface() made no TAP"
        );
        let connected = connect().expect("connect").expect("an interface");
        assert_eq!(connected.interface, "eth0");
        assert_eq!(connected.tap, TAP_NAME);
        assert_eq!(connected.mac, [0x02, 0x42, 0x0a, 0x58, 0x00, 0x05]);
        assert_eq!(connected.mtu, Some(1450));
        let link = Command::new("ip")
            .args(["-n", &ns.0, "-o", "link", "show", TAP_NAME])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(
            link.contains(" mtu 1450 "),
            "the TAP has the MTU too: {link}"
        );
        assert!(link.contains(",UP"), "the TAP is up: {link}");
        assert_eq!(
            connected.kernel_arg,
            "ip=10.88.0.5::10.88.0.1:255.255.0.0::eth0:off"
        );
        let mut eth0 = attach_plain("eth0");
        // The VMM's side: flint's own TAP code attaches to what connect made.
        let vmm_tap = Tap::open(TAP_NAME).expect("flint attaches to its TAP");
        let mut tap = dup_of(&vmm_tap);
        assert_joined(&mut eth0, &mut tap, 1);
        // A second VM for the same namespace (another container of a pod) while this one has
        // the TAP: refused, and this one's frames still cross.
        let held = connect().expect_err("the TAP is held");
        assert!(
            matches!(held, NetworkError::Held(ref i) if i == "eth0"),
            "{held}"
        );
        assert_joined(&mut eth0, &mut tap, 5);

        // A restart in the same namespace: the VMM gone, connect again, still once each way.
        drop(tap);
        drop(vmm_tap);
        let again = connect().expect("connect again").expect("an interface");
        assert_eq!(again, connected);
        let vmm_tap = Tap::open(TAP_NAME).expect("flint attaches to its TAP again");
        let mut tap = dup_of(&vmm_tap);
        assert_joined(&mut eth0, &mut tap, 3);
        std::mem::forget(ns); // the test's own Netns deletes it
    })
    .join()
    .unwrap();
}

/// A File on (a duplicate of) the TAP's descriptor, to read and write its frames.
fn dup_of(tap: &Tap) -> File {
    // SAFETY: the Tap owns the descriptor and outlives this borrow, which is only duplicated.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(tap.as_raw_fd()) };
    File::from(fd.try_clone_to_owned().unwrap())
}

#[test]
fn a_namespace_with_only_loopback_gives_the_vm_no_network() {
    let test = "a_namespace_with_only_loopback_gives_the_vm_no_network";
    let Some(ns) = Netns::new(test) else {
        return;
    };
    ns.ip_in(&["link", "set", "lo", "up"]);
    let name = ns.0.clone();
    std::thread::spawn(move || {
        let ns = Netns(name);
        ns.enter();
        assert_eq!(interface().expect("interface"), None);
        assert_eq!(connect().expect("connect"), None);
        std::mem::forget(ns);
    })
    .join()
    .unwrap();
}

#[test]
fn two_interfaces_or_none_with_ipv4_are_refused_in_one_line() {
    let test = "two_interfaces_or_none_with_ipv4_are_refused_in_one_line";
    let Some(ns) = Netns::new(test) else {
        return;
    };
    ns.ip_in(&["tuntap", "add", "dev", "eth0", "mode", "tap"]);
    let name = ns.0.clone();
    let ns_name = name.clone();
    let first = std::thread::spawn(move || {
        let ns = Netns(name);
        ns.enter();
        let e = connect().expect_err("no IPv4 address");
        std::mem::forget(ns);
        e
    })
    .join()
    .unwrap();
    assert!(
        matches!(first, NetworkError::NoAddress(ref i) if i == "eth0"),
        "{first}"
    );
    ns.ip_in(&["tuntap", "add", "dev", "eth1", "mode", "tap"]);
    let second = std::thread::spawn(move || {
        let ns = Netns(ns_name);
        ns.enter();
        let e = connect().expect_err("two interfaces");
        assert!(matches!(interface(), Err(NetworkError::TooMany(_))));
        std::mem::forget(ns);
        e
    })
    .join()
    .unwrap();
    let text = second.to_string();
    assert!(text.contains("(eth0, eth1)"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}
