//! The vsock device with its queues in guest memory (the test plays the guest's driver) and
//! real Unix sockets on the host side: both ways of connecting, data and credit both ways,
//! closes and resets, caps, and hostile packets and host clients.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::connection::CONN_BUF_SIZE;
use super::muxer::{Timeouts, FIRST_HOST_PORT};
use super::packet::{
    op, Header, HDR_LEN, HOST_CID, MAX_PAYLOAD, SHUTDOWN_BOTH, SHUTDOWN_SEND, TYPE_STREAM,
};
use super::*;
use crate::devices::irq::IrqLine;
use crate::devices::virtio::testing::{TestQueue, F_WRITE};
use crate::devices::virtio::{Interrupt, Served};

const CID: u64 = 3;
const MEM_SIZE: usize = 8 << 20;
const QSIZE: u16 = 256;
/// Each RX buffer: a page, at RXBUF + head * RX_BUF_LEN.
const RXBUF: u64 = 0x10_0000;
const RX_BUF_LEN: u32 = 4096;
/// TX packets go in rotating slots big enough for a header and MAX_PAYLOAD.
const TXBUF: u64 = 0x30_0000;
const TX_SLOT: u64 = 0x2_0000;
const TX_SLOTS: u64 = 8;
const GUEST_BUF_ALLOC: u32 = 1 << 20;

struct Harness {
    mem: GuestMemoryMmap,
    rx: TestQueue,
    tx: TestQueue,
    device: Vsock,
    w: VsockWorker,
    dir: PathBuf,
    uds: PathBuf,
    /// RX buffers posted, and used entries read so far.
    rx_posted: u16,
    rx_seen: u16,
    tx_slot: u64,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Harness {
    fn new(name: &str) -> Harness {
        Harness::with_features(name, VIRTIO_F_VERSION_1)
    }

    /// A harness whose driver accepted `features` (EVENT_IDX, say).
    fn with_features(name: &str, features: u64) -> Harness {
        let dir = std::env::temp_dir().join(format!("flint-vsock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let device = Vsock::new(3, VsockBackend::bind(&uds).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let (rx, mut rxq) = TestQueue::new(&mem, GuestAddress(0), QSIZE);
        let (tx, mut txq) = TestQueue::new(&mem, GuestAddress(0x2_0000), QSIZE);
        let (_, mut evq) = TestQueue::new(&mem, GuestAddress(0x4_0000), QSIZE);
        // As the transport does for a driver that negotiated EVENT_IDX.
        let event_idx = features & VIRTIO_RING_F_EVENT_IDX != 0;
        for q in [&mut rxq, &mut txq, &mut evq] {
            virtio_queue::QueueT::set_event_idx(q, event_idx);
        }
        let w = Harness::worker(&device, &mem, vec![rxq, txq, evq], features);
        Harness {
            mem,
            rx,
            tx,
            device,
            w,
            dir,
            uds,
            rx_posted: 0,
            rx_seen: 0,
            tx_slot: 0,
        }
    }

    fn worker(
        device: &Vsock,
        mem: &GuestMemoryMmap,
        queues: Vec<virtio_queue::Queue>,
        features: u64,
    ) -> VsockWorker {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        device
            .start(ActivateContext {
                mem: mem.clone(),
                queues,
                acked_features: features,
                interrupt: Arc::new(Interrupt::new(IrqLine::Fd(irq))),
            })
            .unwrap()
    }

    /// The guest posts `n` RX buffers of a page each.
    fn post_rx(&mut self, n: u16) {
        for _ in 0..n {
            if self.rx_posted.is_multiple_of(QSIZE) && self.rx_posted > 0 {
                // The table is full: every buffer but one the device may hold was used.
                assert!(self.rx_posted - self.rx.used_idx(&self.mem) <= 1);
                self.rx.recycle();
            }
            // Each descriptor index owns its page.
            let addr = RXBUF + u64::from(self.rx.next_desc()) * u64::from(RX_BUF_LEN);
            let head = self.rx.put_chain(&self.mem, &[(addr, RX_BUF_LEN, F_WRITE)]);
            self.rx.make_available(&self.mem, head);
            self.rx_posted += 1;
        }
        self.run(|w| w.process_queue(0));
    }

    /// What the device put in the guest's RX buffers since the last look.
    fn rx_packets(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while self.rx_seen != self.rx.used_idx(&self.mem) {
            let (head, len) = self.rx.used(&self.mem, self.rx_seen);
            self.rx_seen = self.rx_seen.wrapping_add(1);
            let addr = RXBUF + u64::from(head) * u64::from(RX_BUF_LEN);
            let mut bytes = vec![0u8; usize::try_from(len).unwrap()];
            self.mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            assert!(bytes.len() >= HDR_LEN, "a used RX buffer without a packet");
            let hdr = Header::from_bytes(bytes[..HDR_LEN].try_into().unwrap());
            assert_eq!(
                (hdr.src_cid, hdr.dst_cid, hdr.kind),
                (HOST_CID, CID, TYPE_STREAM),
                "{hdr:?}"
            );
            assert_eq!(usize::try_from(hdr.len).unwrap(), bytes.len() - HDR_LEN);
            out.push((hdr, bytes[HDR_LEN..].to_vec()));
        }
        out
    }

    /// Only the ops of what arrived.
    fn rx_ops(&mut self) -> Vec<u16> {
        self.rx_packets().iter().map(|(h, _)| h.op).collect()
    }

    /// The guest sends raw descriptors (addr, len, flags) on TX.
    fn guest_chain(&mut self, descs: &[(u64, u32, u16)]) {
        let head = self.tx.put_chain(&self.mem, descs);
        self.tx.make_available(&self.mem, head);
        self.run(|w| w.process_queue(1));
        self.tx.recycle();
    }

    /// The guest sends a packet (header, then payload in a second descriptor).
    fn guest_send(&mut self, hdr: Header, payload: &[u8]) {
        let addr = TXBUF + (self.tx_slot % TX_SLOTS) * TX_SLOT;
        self.tx_slot += 1;
        let hdr = Header {
            len: u32::try_from(payload.len()).unwrap(),
            ..hdr
        };
        self.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(payload, GuestAddress(addr + 0x100))
            .unwrap();
        let len = u32::try_from(payload.len()).unwrap();
        if payload.is_empty() {
            self.guest_chain(&[(addr, 44, 0)]);
        } else {
            self.guest_chain(&[(addr, 44, 0), (addr + 0x100, len, 0)]);
        }
    }

    /// Serves host events until there are none, as the worker thread does: it serves the
    /// device's epoll instance for as long as that is readable.
    fn host(&mut self) {
        let fd = self.w.backend_fds()[0];
        for _ in 0..100 {
            self.run(|w| w.process_backend(0));
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one descriptor we own, described by `pfd`, without waiting.
            if unsafe { libc::poll(&mut pfd, 1, 0) } == 0 {
                return;
            }
        }
        panic!("the epoll instance stays readable");
    }

    fn run(&mut self, mut f: impl FnMut(&mut VsockWorker) -> Served) {
        for _ in 0..1000 {
            match f(&mut self.w) {
                Served::More => continue,
                served => return assert_eq!(served, Served::Done),
            }
        }
        panic!("never done");
    }

    /// A host client connected to guest port `port` through the handshake; returns it and
    /// the host port flint gave it.
    fn host_connect(&mut self, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
        let mut c = client(&self.uds);
        c.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
        self.host();
        let pkts = self.rx_packets();
        assert_eq!(pkts.len(), 1, "{pkts:?}");
        let req = pkts[0].0;
        assert_eq!((req.op, req.dst_port), (op::REQUEST, port));
        self.guest_send(
            Header {
                op: op::RESPONSE,
                buf_alloc,
                ..guest(port, req.src_port)
            },
            b"",
        );
        assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
        (c, req.src_port)
    }
}

/// A guest header from guest port `src` to host port `dst`.
fn guest(src: u32, dst: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: src,
        dst_port: dst,
        kind: TYPE_STREAM,
        buf_alloc: GUEST_BUF_ALLOC,
        ..Header::default()
    }
}

fn client(path: &std::path::Path) -> UnixStream {
    let c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn read_line(c: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() < 64 {
        c.read_exact(&mut b).unwrap();
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Whether the host side of `c` was closed (after whatever it had sent).
fn closed(c: &mut UnixStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The client closes its socket. Shut down first: a child another test forks meanwhile may
/// hold a copy of the descriptor for a moment, and flint must see the end now.
fn hang_up(c: UnixStream) {
    c.shutdown(std::net::Shutdown::Both).unwrap();
}

/// Nothing to read on `c` now.
fn quiet(c: &mut UnixStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let r = c.read(&mut [0u8; 16]);
    c.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn config_space_and_features() {
    let h = Harness::new("config");
    let mut c = [0u8; 8];
    h.device.read_config(0, &mut c);
    assert_eq!(u64::from_le_bytes(c), CID);
    assert_eq!(h.device.device_type(), 19);
    assert_eq!(h.device.queue_max_sizes().len(), 3);
    assert_ne!(h.device.features() & VIRTIO_F_VERSION_1, 0);
}

#[test]
fn binding_refuses_an_existing_path_and_the_socket_goes_away() {
    let h = Harness::new("bind");
    let e = VsockBackend::bind(&h.uds).err().unwrap();
    assert!(e.to_string().contains("the path exists"), "{e}");
    let file = h.dir.join("file");
    std::fs::write(&file, b"keep").unwrap();
    assert!(matches!(
        VsockBackend::bind(&file),
        Err(VsockError::Exists(_))
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let e = VsockBackend::bind(&h.dir.join("no/such/dir/v.sock"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("cannot create the socket"), "{e}");
    // Owner-only, and removed when the device goes.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&h.uds).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let other = h.dir.join("other.sock");
    let b = VsockBackend::bind(&other).unwrap();
    assert!(other.exists());
    drop(b);
    assert!(!other.exists(), "the socket outlived its backend");
}

#[test]
fn host_initiated_handshake_and_data_both_ways() {
    let mut h = Harness::new("handshake");
    h.post_rx(8);
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 1234\n").unwrap();
    h.host();
    let pkts = h.rx_packets();
    assert_eq!(pkts.len(), 1);
    let req = pkts[0].0;
    assert_eq!((req.op, req.dst_port, req.len), (op::REQUEST, 1234, 0));
    assert!(req.src_port >= FIRST_HOST_PORT);
    assert_eq!(req.buf_alloc, CONN_BUF_SIZE);
    let hp = req.src_port;
    // Nothing for the client until the guest accepts.
    assert!(quiet(&mut c));
    h.guest_send(
        Header {
            op: op::RESPONSE,
            ..guest(1234, hp)
        },
        b"",
    );
    assert_eq!(read_line(&mut c), format!("OK {hp}\n"));
    assert_eq!(h.w.connections(), 1);

    // Host to guest.
    c.write_all(b"hello, guest").unwrap();
    h.host();
    let pkts = h.rx_packets();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (op::RW, hp, 1234)
    );
    assert_eq!(pkts[0].1, b"hello, guest");

    // Guest to host.
    h.guest_send(
        Header {
            op: op::RW,
            ..guest(1234, hp)
        },
        b"hello, host",
    );
    let mut got = [0u8; 11];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello, host");

    // A second client gets another host port.
    let (_c2, hp2) = h.host_connect(1234, GUEST_BUF_ALLOC);
    assert_ne!(hp2, hp);
    assert_eq!(h.w.connections(), 2);
}

#[test]
fn bytes_sent_right_after_the_connect_line_reach_the_guest() {
    let mut h = Harness::new("pipelined");
    h.post_rx(8);
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 80\nGET / HTTP/1.0\r\n\r\n").unwrap();
    h.host();
    let req = h.rx_packets()[0].0;
    h.guest_send(
        Header {
            op: op::RESPONSE,
            ..guest(80, req.src_port)
        },
        b"",
    );
    assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
    h.host();
    let pkts = h.rx_packets();
    assert_eq!(pkts[0].1, b"GET / HTTP/1.0\r\n\r\n");
}

#[test]
fn guest_initiated_connections_reach_the_port_socket_or_are_reset() {
    let mut h = Harness::new("guest-init");
    h.post_rx(8);
    let listener = UnixListener::bind(format!("{}_5000", h.uds.display())).unwrap();
    h.guest_send(
        Header {
            op: op::REQUEST,
            ..guest(1025, 5000)
        },
        b"",
    );
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let pkts = h.rx_packets();
    assert_eq!(pkts.len(), 1);
    let resp = pkts[0].0;
    assert_eq!(
        (resp.op, resp.src_port, resp.dst_port, resp.buf_alloc),
        (op::RESPONSE, 5000, 1025, CONN_BUF_SIZE)
    );
    h.guest_send(
        Header {
            op: op::RW,
            ..guest(1025, 5000)
        },
        b"ping",
    );
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    peer.write_all(b"pong").unwrap();
    h.host();
    let pkts = h.rx_packets();
    assert_eq!((pkts[0].0.op, &pkts[0].1[..]), (op::RW, &b"pong"[..]));

    // Nothing listens on port 5001: RST, and no connection.
    h.guest_send(
        Header {
            op: op::REQUEST,
            ..guest(1026, 5001)
        },
        b"",
    );
    let pkts = h.rx_packets();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.src_port, pkts[0].0.dst_port),
        (op::RST, 5001, 1026)
    );
    assert_eq!(h.w.connections(), 1);
    assert_eq!(h.w.stats().refused, 1);
}

#[test]
fn flint_sends_the_guest_no_more_than_its_credit() {
    let mut h = Harness::new("credit");
    h.post_rx(16);
    let (mut c, hp) = h.host_connect(7, 100);
    let data: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&data).unwrap();
    h.host();
    let pkts = h.rx_packets();
    let ops: Vec<u16> = pkts.iter().map(|(p, _)| p.op).collect();
    assert_eq!(ops, [op::RW, op::CREDIT_REQUEST], "{pkts:?}");
    assert_eq!(pkts[0].1, &data[..100]);
    // No credit: the socket is not even read (nothing more however often flint looks).
    h.host();
    h.host();
    assert!(h.rx_packets().is_empty());
    // The guest read 60 bytes: 60 more may come.
    h.guest_send(
        Header {
            op: op::CREDIT_UPDATE,
            buf_alloc: 100,
            fwd_cnt: 60,
            ..guest(7, hp)
        },
        b"",
    );
    h.host();
    let pkts = h.rx_packets();
    assert_eq!(pkts[0].0.op, op::RW);
    assert_eq!(pkts[0].1, &data[100..160]);
    // A bigger buffer: the rest, and nothing beyond it.
    h.guest_send(
        Header {
            op: op::CREDIT_UPDATE,
            buf_alloc: 1000,
            fwd_cnt: 160,
            ..guest(7, hp)
        },
        b"",
    );
    h.host();
    let pkts = h.rx_packets();
    let got: Vec<u8> = pkts.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(got, &data[160..]);
}

#[test]
fn host_data_is_cut_to_the_guests_buffers() {
    let mut h = Harness::new("rxbuf");
    h.post_rx(16);
    let (mut c, _) = h.host_connect(7, GUEST_BUF_ALLOC);
    let data = vec![0x5a; 10_000];
    c.write_all(&data).unwrap();
    h.host();
    let pkts = h.rx_packets();
    assert!(pkts.len() >= 3, "{}", pkts.len());
    assert!(pkts.iter().all(|(p, d)| {
        p.op == op::RW && d.len() <= usize::try_from(RX_BUF_LEN).unwrap() - HDR_LEN
    }));
    assert_eq!(pkts.iter().map(|(_, d)| d.len()).sum::<usize>(), 10_000);
}

#[test]
fn no_guest_buffers_means_waiting_not_dropping() {
    let mut h = Harness::new("no-rxbuf");
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 7\n").unwrap();
    h.host();
    h.host();
    assert_eq!(h.rx.used_idx(&h.mem), 0);
    // The REQUEST waits for a buffer and goes out once there is one.
    h.post_rx(1);
    assert_eq!(h.rx_ops(), [op::REQUEST]);
}

#[test]
fn with_event_idx_a_packet_waiting_for_buffers_asks_for_a_kick() {
    let mut h = Harness::with_features("event-idx", VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX);
    h.post_rx(1);
    let (mut c, hp) = h.host_connect(7, GUEST_BUF_ALLOC);
    // The one buffer is gone: host data waits, and the driver is told to kick RX as soon as it
    // posts the next buffer (or it never would, with EVENT_IDX).
    c.write_all(b"x").unwrap();
    h.host();
    assert_eq!(h.rx.used_idx(&h.mem), 1);
    assert_eq!(h.rx.avail_event(&h.mem), 1);
    h.post_rx(1);
    let pkts = h.rx_packets();
    assert_eq!((pkts[0].0.op, pkts[0].0.src_port), (op::RW, hp));
    assert_eq!(pkts[0].1, b"x");
}

#[test]
fn guest_data_beyond_flints_credit_resets_the_connection() {
    let mut h = Harness::new("tx-credit");
    h.post_rx(64);
    // The client never reads: flint's buffer fills.
    let (mut c, hp) = h.host_connect(9, GUEST_BUF_ALLOC);
    let chunk = vec![0x42u8; MAX_PAYLOAD];
    let mut sent = 0usize;
    let mut updates = 0u32;
    let mut reset = false;
    for _ in 0..64 {
        h.guest_send(
            Header {
                op: op::RW,
                ..guest(9, hp)
            },
            &chunk,
        );
        sent += chunk.len();
        assert!(h.w.buffered() <= usize::try_from(CONN_BUF_SIZE).unwrap());
        for (p, _) in h.rx_packets() {
            match p.op {
                op::CREDIT_UPDATE => updates = p.fwd_cnt,
                op::RST => reset = true,
                other => panic!("op {other}"),
            }
        }
        if reset {
            break;
        }
    }
    assert!(reset, "a guest that ignores its credit is reset");
    // What the socket took was reported, and what flint held was at most its buffer.
    assert!(updates > 0);
    let limit = usize::try_from(updates).unwrap() + usize::try_from(CONN_BUF_SIZE).unwrap();
    assert!(sent <= limit + MAX_PAYLOAD, "{sent} > {limit}");
    assert_eq!(h.w.connections(), 0);
    assert_eq!(h.w.buffered(), 0);
    // The client gets what the socket took, then the end.
    assert!(closed(&mut c));
}

#[test]
fn a_guest_within_its_credit_hears_when_the_host_catches_up() {
    let mut h = Harness::new("tx-update");
    h.post_rx(64);
    let (mut c, hp) = h.host_connect(9, GUEST_BUF_ALLOC);
    // Four full packets: more than half of flint's buffer in the guest's eyes.
    let chunk = vec![0x17u8; MAX_PAYLOAD];
    for _ in 0..4 {
        h.guest_send(
            Header {
                op: op::RW,
                ..guest(9, hp)
            },
            &chunk,
        );
    }
    let sent = u32::try_from(4 * MAX_PAYLOAD).unwrap();
    let mut last_told = 0;
    for (p, _) in h.rx_packets() {
        assert_eq!(p.op, op::CREDIT_UPDATE);
        last_told = p.fwd_cnt;
    }
    // The client reads it all; flint writes what it held, and says so.
    let mut buf = vec![0u8; 4 * MAX_PAYLOAD];
    let reader = std::thread::spawn(move || {
        c.read_exact(&mut buf).unwrap();
        (c, buf)
    });
    // Once the host has taken it all, the guest believes at least half of flint's buffer is
    // free again (it is told no more often than that).
    let believed_free = |told: u32| CONN_BUF_SIZE - (sent - told);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.w.buffered() > 0 || believed_free(last_told) < CONN_BUF_SIZE / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "told {last_told} of {sent}, {} buffered",
            h.w.buffered()
        );
        h.host();
        for (p, _) in h.rx_packets() {
            assert_eq!(p.op, op::CREDIT_UPDATE);
            last_told = p.fwd_cnt;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (_c, buf) = reader.join().unwrap();
    assert!(buf.iter().all(|&b| b == 0x17));
    assert_eq!(h.w.buffered(), 0);
}

#[test]
fn a_guest_rst_closes_the_client() {
    let mut h = Harness::new("guest-rst");
    h.post_rx(8);
    let (mut c, hp) = h.host_connect(22, GUEST_BUF_ALLOC);
    h.guest_send(
        Header {
            op: op::RST,
            ..guest(22, hp)
        },
        b"",
    );
    assert!(closed(&mut c));
    assert_eq!(h.w.connections(), 0);
    assert!(h.rx_packets().is_empty(), "no answer to an RST");
    // Data for the connection now is answered with an RST.
    h.guest_send(
        Header {
            op: op::RW,
            ..guest(22, hp)
        },
        b"late",
    );
    assert_eq!(h.rx_ops(), [op::RST]);
}

#[test]
fn half_closes_both_ways() {
    let mut h = Harness::new("half-close");
    h.post_rx(16);
    // The host client stops sending but still reads.
    let (mut c, hp) = h.host_connect(30, GUEST_BUF_ALLOC);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    h.host();
    let pkts = h.rx_packets();
    assert_eq!(pkts.len(), 1);
    assert_eq!(
        (pkts[0].0.op, pkts[0].0.flags),
        (op::SHUTDOWN, SHUTDOWN_SEND)
    );
    h.guest_send(
        Header {
            op: op::RW,
            ..guest(30, hp)
        },
        b"reply",
    );
    let mut got = [0u8; 5];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"reply");
    // The guest closes: both ways are done, so the connection ends with an RST.
    h.guest_send(
        Header {
            op: op::SHUTDOWN,
            flags: SHUTDOWN_BOTH,
            ..guest(30, hp)
        },
        b"",
    );
    assert_eq!(h.rx_ops(), [op::RST]);
    assert!(closed(&mut c));
    assert_eq!(h.w.connections(), 0);

    // The guest stops sending first: the client reads the end, and can still answer.
    let (mut c, hp) = h.host_connect(31, GUEST_BUF_ALLOC);
    h.guest_send(
        Header {
            op: op::RW,
            ..guest(31, hp)
        },
        b"request",
    );
    h.guest_send(
        Header {
            op: op::SHUTDOWN,
            flags: SHUTDOWN_SEND,
            ..guest(31, hp)
        },
        b"",
    );
    let mut req = Vec::new();
    c.read_to_end(&mut req).unwrap();
    assert_eq!(req, b"request");
    c.write_all(b"answer").unwrap();
    hang_up(c);
    h.host();
    let pkts = h.rx_packets();
    let ops: Vec<u16> = pkts.iter().map(|(p, _)| p.op).collect();
    assert_eq!(ops, [op::RW, op::RST], "{pkts:?}");
    assert_eq!(pkts[0].1, b"answer");
    assert_eq!(h.w.connections(), 0);
    // Data after the guest's own SHUTDOWN SEND would be a broken guest: reset.
    let (_c, hp) = h.host_connect(32, GUEST_BUF_ALLOC);
    let g = guest(32, hp);
    h.guest_send(
        Header {
            op: op::SHUTDOWN,
            flags: SHUTDOWN_SEND,
            ..g
        },
        b"",
    );
    h.guest_send(Header { op: op::RW, ..g }, b"more");
    assert_eq!(h.rx_ops(), [op::RST]);
}

#[test]
fn the_host_closing_tells_the_guest_after_its_data() {
    let mut h = Harness::new("host-close");
    h.post_rx(8);
    let (mut c, hp) = h.host_connect(40, GUEST_BUF_ALLOC);
    c.write_all(b"bye").unwrap();
    hang_up(c);
    h.host();
    let pkts = h.rx_packets();
    let ops: Vec<u16> = pkts.iter().map(|(p, _)| p.op).collect();
    assert_eq!(ops, [op::RW, op::SHUTDOWN], "{pkts:?}");
    assert_eq!(pkts[1].0.flags, SHUTDOWN_SEND);
    // The guest writes to a host that is gone: reset.
    h.guest_send(
        Header {
            op: op::RW,
            ..guest(40, hp)
        },
        b"anyone?",
    );
    assert_eq!(h.rx_ops(), [op::RST]);
    assert_eq!(h.w.connections(), 0);
}

#[test]
fn malformed_packets_open_nothing_and_crash_nothing() {
    let mut h = Harness::new("malformed");
    h.post_rx(32);
    let listener = UnixListener::bind(format!("{}_5000", h.uds.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let req = Header {
        op: op::REQUEST,
        ..guest(1025, 5000)
    };
    // Another CID than the guest's, or not to the host: dropped without an answer.
    h.guest_send(Header { src_cid: 4, ..req }, b"");
    h.guest_send(Header { src_cid: 2, ..req }, b"");
    h.guest_send(Header { dst_cid: 3, ..req }, b"");
    h.guest_send(
        Header {
            dst_cid: u64::MAX,
            ..req
        },
        b"",
    );
    assert!(h.rx_packets().is_empty());
    // Not a stream (SEQPACKET, garbage): refused with an RST.
    h.guest_send(Header { kind: 2, ..req }, b"");
    h.guest_send(
        Header {
            kind: 0xffff,
            ..req
        },
        b"",
    );
    // A length past the chain's buffers, or past any packet.
    let addr = TXBUF + 7 * TX_SLOT;
    for len in [100, u32::MAX] {
        let bad = Header { len, ..req };
        h.mem
            .write_slice(&bad.to_bytes(), GuestAddress(addr))
            .unwrap();
        h.guest_chain(&[(addr, 44 + 99, 0)]);
    }
    assert_eq!(h.rx_ops(), [op::RST; 4]);
    // Shorter than a header, device-writable, outside guest memory, a broken chain: dropped.
    h.mem
        .write_slice(&req.to_bytes(), GuestAddress(addr))
        .unwrap();
    h.guest_chain(&[(addr, 43, 0)]);
    h.guest_chain(&[(addr, 44, F_WRITE)]);
    h.guest_chain(&[(MEM_SIZE as u64 - 20, 44, 0)]);
    h.guest_chain(&[(addr, 20, 0), (addr + 20, 24, F_WRITE)]);
    assert!(h.rx_packets().is_empty());
    // An unknown op for no connection: RST; an RST for none: nothing.
    h.guest_send(Header { op: 99, ..req }, b"");
    h.guest_send(Header { op: op::RST, ..req }, b"");
    assert_eq!(h.rx_ops(), [op::RST]);
    assert_eq!(h.w.connections(), 0);
    assert!(matches!(listener.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock));
    assert_eq!(h.w.stats().tx_dropped, 12);

    // A well-formed request still works after all that.
    h.guest_send(req, b"");
    assert!(listener.accept().is_ok());
    assert_eq!(h.rx_ops(), [op::RESPONSE]);
    // A bad length on an open stream loses its data: the stream is reset.
    let rw = Header {
        op: op::RW,
        len: 100,
        ..guest(1025, 5000)
    };
    h.mem
        .write_slice(&rw.to_bytes(), GuestAddress(addr))
        .unwrap();
    h.guest_chain(&[(addr, 44 + 10, 0)]);
    assert_eq!(h.rx_ops(), [op::RST]);
    assert_eq!(h.w.connections(), 0);
}

#[test]
fn rx_chains_flint_cannot_write_are_handed_back_empty() {
    let mut h = Harness::new("bad-rx");
    // A readable buffer, one with room for a header and no data, one outside memory; then a
    // good one.
    for (addr, len, flags) in [
        (RXBUF, 4096, 0),
        (RXBUF, 44, F_WRITE),
        (MEM_SIZE as u64 - 8, 4096, F_WRITE),
    ] {
        let head = h.rx.put_chain(&h.mem, &[(addr, len, flags)]);
        h.rx.make_available(&h.mem, head);
        h.rx_posted += 1;
    }
    h.run(|w| w.process_queue(0));
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 7\n").unwrap();
    h.host();
    assert_eq!(h.rx.used_idx(&h.mem), 3);
    for n in 0..3 {
        assert_eq!(h.rx.used(&h.mem, n).1, 0);
    }
    h.rx_seen = 3;
    h.post_rx(1);
    assert_eq!(h.rx_ops(), [op::REQUEST]);
}

#[test]
fn connections_and_waiting_clients_are_capped() {
    let mut h = Harness::new("cap");
    h.post_rx(200);
    let listener = UnixListener::bind(format!("{}_5000", h.uds.display())).unwrap();
    let mut peers = Vec::new();
    let n = u32::try_from(MAX_CONNECTIONS).unwrap();
    for i in 0..=n {
        h.guest_send(
            Header {
                op: op::REQUEST,
                ..guest(2000 + i, 5000)
            },
            b"",
        );
        if i < n {
            peers.push(listener.accept().unwrap());
        }
    }
    let ops = h.rx_ops();
    assert_eq!(ops.len(), MAX_CONNECTIONS + 1);
    assert!(ops[..MAX_CONNECTIONS].iter().all(|&o| o == op::RESPONSE));
    assert_eq!(ops[MAX_CONNECTIONS], op::RST);
    assert_eq!(h.w.connections(), MAX_CONNECTIONS);
    // A host client at the cap is closed once it says where it wants to go.
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 7\n").unwrap();
    h.host();
    assert!(closed(&mut c));
    assert!(h.rx_packets().is_empty());

    // Clients that say nothing: at most MAX_PENDING_CLIENTS wait, the next is closed.
    let mut silent: Vec<UnixStream> = (0..MAX_PENDING_CLIENTS).map(|_| client(&h.uds)).collect();
    h.host();
    assert_eq!(h.w.pending_clients(), MAX_PENDING_CLIENTS);
    let mut extra = client(&h.uds);
    h.host();
    assert!(closed(&mut extra));
    assert_eq!(h.w.pending_clients(), MAX_PENDING_CLIENTS);
    assert!(quiet(&mut silent[0]));
}

#[test]
fn bad_connect_lines_close_the_client() {
    let mut h = Harness::new("connect-line");
    h.post_rx(16);
    let too_long = format!("CONNECT {}\n", "1".repeat(40));
    let no_newline = "CONNECT ".repeat(5);
    for line in [
        "HELLO 12\n",
        "CONNECT\n",
        "CONNECT x\n",
        "CONNECT 1 2\n",
        "connect 5\n",
        "CONNECT 4294967296\n",
        "CONNECT -1\n",
        &too_long,
        &no_newline,
    ] {
        let mut c = client(&h.uds);
        c.write_all(line.as_bytes()).unwrap();
        h.host();
        assert!(closed(&mut c), "{line:?}");
    }
    assert!(h.rx_packets().is_empty());
    assert_eq!((h.w.pending_clients(), h.w.connections()), (0, 0));
    // A client that hangs up mid-line.
    let mut c = client(&h.uds);
    c.write_all(b"CONN").unwrap();
    hang_up(c);
    h.host();
    assert_eq!(h.w.pending_clients(), 0);
    // A line with \r\n is fine.
    c = client(&h.uds);
    c.write_all(b"CONNECT 5\r\n").unwrap();
    h.host();
    assert_eq!(h.rx_ops(), [op::REQUEST]);
}

#[test]
fn a_port_nobody_listens_on_in_the_guest_closes_the_client() {
    let mut h = Harness::new("refused");
    h.post_rx(8);
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 9999\n").unwrap();
    h.host();
    let req = h.rx_packets()[0].0;
    assert_eq!(req.op, op::REQUEST);
    // What a Linux guest answers for a port without a listener.
    h.guest_send(
        Header {
            op: op::RST,
            ..guest(9999, req.src_port)
        },
        b"",
    );
    assert!(closed(&mut c));
    assert_eq!(h.w.connections(), 0);
}

#[test]
fn deadlines_end_silent_clients_and_unanswered_requests() {
    let mut h = Harness::new("timeouts");
    h.w.set_timeouts(Timeouts {
        connect_line: Duration::from_millis(50),
        request: Duration::from_millis(50),
        shutdown: Duration::from_millis(50),
    });
    h.post_rx(8);
    let mut silent = client(&h.uds);
    let mut asking = client(&h.uds);
    asking.write_all(b"CONNECT 4\n").unwrap();
    h.host();
    assert_eq!(h.rx_ops(), [op::REQUEST]);
    // The worker's epoll instance becomes readable when the timer fires: the worker thread
    // wakes up for each deadline by itself (the two are microseconds apart: it may take two).
    let fd = h.w.backend_fds()[0];
    for _ in 0..2 {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one descriptor we own, described by `pfd`.
        let n = unsafe { libc::poll(&mut pfd, 1, 2000) };
        assert_eq!(n, 1, "the timer woke the epoll instance");
        h.host();
        if h.w.pending_clients() + h.w.connections() == 0 {
            break;
        }
    }
    assert!(closed(&mut silent));
    assert!(closed(&mut asking));
    // The guest is told to forget the request it never answered.
    assert_eq!(h.rx_ops(), [op::RST]);
    assert_eq!((h.w.pending_clients(), h.w.connections()), (0, 0));
}

#[test]
fn a_reset_drops_every_connection_and_the_listener_stays() {
    let mut h = Harness::new("reset");
    h.post_rx(8);
    let (mut c, _) = h.host_connect(1, GUEST_BUF_ALLOC);
    let mut waiting = client(&h.uds);
    h.host();
    assert_eq!(h.w.pending_clients(), 1);
    // The driver resets the device: its worker goes (the transport drops it).
    let (rx, rxq) = TestQueue::new(&h.mem, GuestAddress(0), QSIZE);
    let (tx, txq) = TestQueue::new(&h.mem, GuestAddress(0x2_0000), QSIZE);
    let (_, evq) = TestQueue::new(&h.mem, GuestAddress(0x4_0000), QSIZE);
    h.w = Harness::worker(&h.device, &h.mem, vec![rxq, txq, evq], VIRTIO_F_VERSION_1);
    (h.rx, h.tx, h.rx_posted, h.rx_seen) = (rx, tx, 0, 0);
    assert!(closed(&mut c));
    assert!(closed(&mut waiting));
    // The next driver serves new clients on the same socket.
    h.post_rx(8);
    let (_c, _) = h.host_connect(1, GUEST_BUF_ALLOC);
    assert_eq!(h.w.connections(), 1);
}

#[test]
fn connect_line_parsing() {
    use super::muxer::parse_connect;
    assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
    assert_eq!(parse_connect(b"CONNECT  52 \r"), Some(52));
    assert_eq!(parse_connect(b"CONNECT 4294967295"), Some(u32::MAX));
    for bad in [
        &b"CONNECT"[..],
        b"CONNECT 52 x",
        b"OK 52",
        b"CONNECT \xff",
        b"",
    ] {
        assert_eq!(parse_connect(bad), None, "{bad:?}");
    }
}

#[test]
fn tiny_rx_buffers_carry_data_a_byte_at_a_time() {
    let mut h = Harness::new("tiny-rx");
    h.post_rx(4);
    let (mut c, _) = h.host_connect(7, GUEST_BUF_ALLOC);
    c.write_all(b"abc").unwrap();
    // Buffers with room for a header and one byte: slow, but never stuck or spinning.
    for _ in 0..3 {
        let addr = RXBUF + u64::from(h.rx.next_desc()) * u64::from(RX_BUF_LEN);
        let head = h.rx.put_chain(&h.mem, &[(addr, 45, F_WRITE)]);
        h.rx.make_available(&h.mem, head);
        h.rx_posted += 1;
    }
    h.run(|w| w.process_queue(0));
    h.host();
    let got: Vec<u8> = h.rx_packets().iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(got, b"abc");
}

#[test]
fn a_guest_close_the_host_never_drains_ends_at_its_deadline() {
    let mut h = Harness::new("close-deadline");
    h.w.set_timeouts(Timeouts {
        shutdown: Duration::from_millis(50),
        ..Timeouts::default()
    });
    h.post_rx(64);
    let (mut c, hp) = h.host_connect(9, GUEST_BUF_ALLOC);
    // Fill the socket and some of flint's buffer: the client does not read.
    for _ in 0..4 {
        h.guest_send(
            Header {
                op: op::RW,
                ..guest(9, hp)
            },
            &[1u8; MAX_PAYLOAD],
        );
    }
    assert!(h.w.buffered() > 0, "the socket took it all");
    h.rx_packets();
    h.guest_send(
        Header {
            op: op::SHUTDOWN,
            flags: SHUTDOWN_BOTH,
            ..guest(9, hp)
        },
        b"",
    );
    assert!(h.rx_packets().is_empty(), "still draining");
    std::thread::sleep(Duration::from_millis(60));
    h.host();
    assert_eq!(h.rx_ops(), [op::RST]);
    assert_eq!((h.w.connections(), h.w.buffered()), (0, 0));
    assert!(closed(&mut c));
}

/// Waits until `f` holds, for at most 5 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_worker_thread_serves_it_all_under_its_seccomp_filter() {
    use crate::devices::virtio::worker::{spawn, DeviceQueues};
    use crate::exit::ExitEvent;
    use crate::sandbox::seccomp::{Filters, SeccompLevel, ThreadKind};

    let mut h = Harness::new("thread");
    let listener = UnixListener::bind(format!("{}_5000", h.uds.display())).unwrap();
    // The real thing: the device's worker thread, its event loop and its seccomp list (a call
    // outside it ends this test binary with status 159 and the call's name).
    let (rx, rxq) = TestQueue::new(&h.mem, GuestAddress(0), QSIZE);
    let (tx, txq) = TestQueue::new(&h.mem, GuestAddress(0x2_0000), QSIZE);
    let (_, evq) = TestQueue::new(&h.mem, GuestAddress(0x4_0000), QSIZE);
    (h.rx, h.tx) = (rx, tx);
    let worker = Harness::worker(&h.device, &h.mem, vec![rxq, txq, evq], VIRTIO_F_VERSION_1);
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let queues = Arc::new(DeviceQueues::new(Arc::new(Interrupt::new(IrqLine::Fd(
        irq,
    )))));
    queues.activate(Box::new(worker));
    let kicks: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .collect();
    let exit = Arc::new(ExitEvent::new().unwrap());
    let thread = spawn(
        "vsock-test",
        queues.clone(),
        &kicks,
        exit.clone(),
        Filters::new(SeccompLevel::Kill).unwrap(),
        ThreadKind::VsockWorker,
    )
    .unwrap();
    for _ in 0..32 {
        let addr = RXBUF + u64::from(h.rx.next_desc()) * u64::from(RX_BUF_LEN);
        let head = h.rx.put_chain(&h.mem, &[(addr, RX_BUF_LEN, F_WRITE)]);
        h.rx.make_available(&h.mem, head);
    }
    kicks[0].write(1).unwrap();
    let mut next_used = 0u16;
    let mut wait_packet = |h: &Harness| {
        eventually("an RX packet", || h.rx.used_idx(&h.mem) != next_used);
        let (head, _) = h.rx.used(&h.mem, next_used);
        next_used += 1;
        let mut raw = [0u8; HDR_LEN];
        let addr = RXBUF + u64::from(head) * u64::from(RX_BUF_LEN);
        h.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
        let hdr = Header::from_bytes(&raw);
        let mut data = vec![0u8; usize::try_from(hdr.len).unwrap()];
        h.mem
            .read_slice(&mut data, GuestAddress(addr + 44))
            .unwrap();
        (hdr, data)
    };
    let send = |h: &mut Harness, hdr: Header, payload: &[u8]| {
        let addr = TXBUF + (h.tx_slot % TX_SLOTS) * TX_SLOT;
        h.tx_slot += 1;
        let hdr = Header {
            len: u32::try_from(payload.len()).unwrap(),
            ..hdr
        };
        h.mem
            .write_slice(&hdr.to_bytes(), GuestAddress(addr))
            .unwrap();
        h.mem.write_slice(payload, GuestAddress(addr + 44)).unwrap();
        let len = 44 + u32::try_from(payload.len()).unwrap();
        let head = h.tx.put_chain(&h.mem, &[(addr, len, 0)]);
        h.tx.make_available(&h.mem, head);
        kicks[1].write(1).unwrap();
    };

    // Host to guest: accept, the line, the REQUEST (and the line's deadline on the timer).
    let mut c = client(&h.uds);
    c.write_all(b"CONNECT 77\n").unwrap();
    let (req, _) = wait_packet(&h);
    assert_eq!((req.op, req.dst_port), (op::REQUEST, 77));
    send(
        &mut h,
        Header {
            op: op::RESPONSE,
            ..guest(77, req.src_port)
        },
        b"",
    );
    assert_eq!(read_line(&mut c), format!("OK {}\n", req.src_port));
    c.write_all(b"to the guest").unwrap();
    let (rw, data) = wait_packet(&h);
    assert_eq!((rw.op, &data[..]), (op::RW, &b"to the guest"[..]));
    send(
        &mut h,
        Header {
            op: op::RW,
            ..guest(77, req.src_port)
        },
        b"to the host",
    );
    let mut got = [0u8; 11];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to the host");

    // Guest to host: a socket, connected.
    send(
        &mut h,
        Header {
            op: op::REQUEST,
            ..guest(1030, 5000)
        },
        b"",
    );
    let (_peer, _) = listener.accept().unwrap();
    let (resp, _) = wait_packet(&h);
    assert_eq!((resp.op, resp.dst_port), (op::RESPONSE, 1030));
    // The client goes: the guest hears the end.
    hang_up(c);
    let (shut, _) = wait_packet(&h);
    assert_eq!((shut.op, shut.flags), (op::SHUTDOWN, SHUTDOWN_SEND));

    thread.stop();
    assert!(exit.reason().is_none(), "{:?}", exit.reason());
    // A reset (the driver's, on a vCPU) closes what is left.
    queues.deactivate();
}
