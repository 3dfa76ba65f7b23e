//! The queue side of the vsock device: it takes the guest's packets from TX, fills the guest's
//! RX buffers with what each connection owes it, and serves the host sockets, all on the
//! device's worker thread.
//!
//! The host side is one epoll instance ([`super::VsockBackend`]), the worker's only backend
//! descriptor, holding the listener, a timer and every host socket, each under a token:
//! [`LISTENER`], [`TIMER`], or the connection's (or waiting client's) own. A host socket is
//! watched only for what flint can act on now (see [`Connection::wanted_events`]), and leaves
//! the epoll set altogether otherwise, so a socket the peer hung up on cannot keep the worker
//! spinning. What the guest is owed waits as flags on its connection, plus a bounded queue of
//! RSTs for packets that belong to no connection: the guest's packets never make flint hold more
//! than that, whether or not it posts RX buffers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};

use super::connection::{ConnKey, Connection, State};
use super::host::{self, HostStream};
use super::packet::{
    self, capacity, op, rx_buffers, write_rx, Header, HDR_LEN, HOST_CID, MAX_PAYLOAD, TYPE_STREAM,
};
use super::{
    VsockBackend, CONNECT_LINE_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECT_LINE, MAX_PENDING_CLIENTS,
    REQUEST_TIMEOUT, SHUTDOWN_TIMEOUT,
};
use crate::bus::lock;
use crate::devices::virtio::{
    notify_if_needed, pop_chain, serve_queue, ActivateContext, Budget, ChainError, Interrupt,
    Popped, QueueWorker, Served,
};

const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;

/// Tokens of the epoll set: the listener, the timer, then one per host socket.
pub const LISTENER: u64 = 0;
pub const TIMER: u64 = 1;
const FIRST_TOKEN: u64 = 2;

/// Host ports flint gives host-initiated connections start here (as Firecracker's do), far from
/// the ports guests connect to.
pub const FIRST_HOST_PORT: u32 = 1 << 30;
/// RSTs owed for packets that belong to no connection; beyond, they are dropped (the guest's
/// own stray packets, or a flood of them).
const MAX_STRAY_RSTS: usize = 256;
/// Host events, and clients accepted, per wake-up.
const EVENT_BATCH: usize = 32;
const ACCEPT_BATCH: usize = 16;
/// How long the listener rests after accept fails (no descriptors left, say), rather than
/// waking the worker for it without end.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// What the device dropped, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VsockStats {
    /// Packets from the guest that were malformed, misaddressed or of another socket type.
    pub tx_dropped: u64,
    /// RSTs for stray packets not sent because too many were waiting.
    pub rst_dropped: u64,
    /// Connections refused: at the cap, or nothing listening on the host.
    pub refused: u64,
}

/// How long things may take; the module's constants, shortened in tests.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect_line: Duration,
    pub request: Duration,
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_line: CONNECT_LINE_TIMEOUT,
            request: REQUEST_TIMEOUT,
            shutdown: SHUTDOWN_TIMEOUT,
        }
    }
}

/// A host client that has not sent its `CONNECT <port>` line yet.
struct PendingClient {
    stream: HostStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// The connections and host clients, and what the guest is owed.
struct Muxer {
    backend: Arc<VsockBackend>,
    guest_cid: u64,
    // BTreeMaps, not HashMaps: a HashMap's random keys cost a getrandom on the vCPU thread
    // that activates the device, which its seccomp filter does not allow.
    conns: BTreeMap<u64, Connection>,
    by_key: BTreeMap<ConnKey, u64>,
    pending: BTreeMap<u64, PendingClient>,
    /// Connections with something for the guest, in turn.
    rx_list: VecDeque<u64>,
    /// RSTs owed for packets that belong to no connection.
    stray_rsts: VecDeque<ConnKey>,
    next_token: u64,
    next_port: u32,
    /// The payload of the packet in hand, either way (MAX_PAYLOAD bytes).
    scratch: Vec<u8>,
    stats: VsockStats,
    timeouts: Timeouts,
    /// The listener and timer are in the epoll set (done on the worker thread, once).
    registered: bool,
    /// The listener is out of the epoll set until then (accept failed).
    listener_resume: Option<Instant>,
    /// When the timer will fire, if it is armed.
    timer_at: Option<Instant>,
}

/// The queues of an active vsock device and its connections.
pub struct VsockWorker {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    event: Queue,
    interrupt: Arc<Interrupt>,
    /// An RX chain taken for a packet that turned out not to be there (a host socket read dry):
    /// kept for the next one rather than handed back (see the net device's `rx_held`).
    held: Option<(u16, Vec<(GuestAddress, usize)>)>,
    mux: Muxer,
}

impl VsockWorker {
    /// The worker for the driver's queues; no system call (this runs on a vCPU thread).
    pub(super) fn new(
        ctx: ActivateContext,
        guest_cid: u64,
        backend: Arc<VsockBackend>,
    ) -> Option<VsockWorker> {
        let mut queues = ctx.queues.into_iter();
        let (Some(rx), Some(tx), Some(event)) = (queues.next(), queues.next(), queues.next())
        else {
            return None;
        };
        Some(VsockWorker {
            mem: ctx.mem,
            rx,
            tx,
            event,
            interrupt: ctx.interrupt,
            held: None,
            mux: Muxer {
                backend,
                guest_cid,
                conns: BTreeMap::new(),
                by_key: BTreeMap::new(),
                pending: BTreeMap::new(),
                rx_list: VecDeque::new(),
                stray_rsts: VecDeque::new(),
                next_token: FIRST_TOKEN,
                next_port: FIRST_HOST_PORT,
                scratch: vec![0; MAX_PAYLOAD],
                stats: VsockStats::default(),
                timeouts: Timeouts::default(),
                registered: false,
                listener_resume: None,
                timer_at: None,
            },
        })
    }

    pub fn stats(&self) -> VsockStats {
        self.mux.stats
    }

    /// Connections open (or owing the guest their RST).
    pub fn connections(&self) -> usize {
        self.mux.conns.len()
    }

    /// Host clients that have not sent their line yet.
    pub fn pending_clients(&self) -> usize {
        self.mux.pending.len()
    }

    /// Bytes of the guest's waiting for host sockets, over all connections.
    pub fn buffered(&self) -> usize {
        self.mux.conns.values().map(Connection::buffered).sum()
    }

    #[cfg(test)]
    pub(super) fn set_timeouts(&mut self, t: Timeouts) {
        self.mux.timeouts = t;
    }

    /// Takes the guest's packets, one batch of them.
    fn transmit(&mut self) -> Served {
        let VsockWorker {
            tx,
            mem,
            interrupt,
            mux,
            ..
        } = self;
        let mem = &*mem;
        serve_queue(tx, mem, interrupt, false, |descs| {
            mux.guest_packet(mem, descs);
            0
        })
    }

    /// Puts what the guest is owed into its RX buffers, within one [`Budget`]: stray RSTs
    /// first, then the connections in turn, one packet each.
    fn receive(&mut self) -> Served {
        // A corrupted avail ring is found on every RX wake-up, even with nothing to send.
        if self.rx.iter(&self.mem).is_err() {
            return Served::Broken;
        }
        let mut budget = Budget::for_queue(&self.rx);
        let mut used = false;
        let outcome = loop {
            if self.mux.stray_rsts.is_empty() && self.mux.rx_list.is_empty() {
                break Served::Done;
            }
            let (head, bufs) = match self.held.take() {
                Some(chain) => chain,
                None => match pop_chain(&mut self.rx, &self.mem, false, &mut budget) {
                    Ok(Popped::Chain(head, descs)) => {
                        match descs.ok().and_then(|d| rx_chain(&self.mem, &d)) {
                            Some(bufs) => (head, bufs),
                            None => {
                                // A chain flint cannot write a packet into: back, unused.
                                if self.rx.add_used(&self.mem, head, 0).is_err() {
                                    return Served::Broken;
                                }
                                used = true;
                                continue;
                            }
                        }
                    }
                    // Ask the driver to notify RX when it adds buffers (with EVENT_IDX it would
                    // not otherwise); if some arrived meanwhile, go on.
                    Ok(Popped::Empty) => match self.rx.enable_notification(&self.mem) {
                        Ok(true) => continue,
                        Ok(false) => break Served::Done,
                        Err(_) => return Served::Broken,
                    },
                    Ok(Popped::Later) => break Served::More,
                    Err(_) => return Served::Broken,
                },
            };
            // rx_chain() made sure there is room for a header and more.
            let room = capacity(&bufs) - HDR_LEN;
            let Some((hdr, len, token)) = self.mux.next_packet(room) else {
                self.held = Some((head, bufs));
                continue;
            };
            let written = write_rx(&self.mem, &bufs, &hdr, &self.mux.scratch[..len]);
            if written.is_none() {
                // Checked to be guest memory: cannot happen, but a packet lost is a stream
                // broken.
                if let Some(t) = token {
                    self.mux.kill(t);
                }
            }
            if self
                .rx
                .add_used(&self.mem, head, written.unwrap_or(0))
                .is_err()
            {
                return Served::Broken;
            }
            used = true;
        };
        if used && !notify_if_needed(&mut self.rx, &self.mem, &self.interrupt) {
            return Served::Broken;
        }
        outcome
    }

    /// Host events: the listener, the timer, host sockets (what they owe the guest goes out
    /// after, see [`VsockWorker::around`]).
    fn host_events(&mut self) -> Served {
        let mut events = [EpollEvent::default(); EVENT_BATCH];
        // Level-triggered: what is left for later is reported again on the next wake-up.
        let n = self.mux.backend.epoll.wait(0, &mut events).unwrap_or(0);
        for ev in &events[..n.min(EVENT_BATCH)] {
            match ev.data() {
                LISTENER => self.mux.accept_clients(),
                TIMER => self.mux.timer_fired(),
                token => self.mux.host_socket_event(token, ev.events()),
            }
        }
        Served::Done
    }

    /// Before and after every batch: the listener and timer are watched, deadlines are kept.
    fn around(&mut self, batch: impl FnOnce(&mut Self) -> Served) -> Served {
        self.mux.register();
        self.mux.expire(Instant::now());
        let served = batch(self);
        // What the batch changed may owe the guest packets (a TX batch, RESPONSEs and RSTs).
        let served = match served {
            Served::Broken => Served::Broken,
            s => match self.receive() {
                Served::Done => s,
                r => r,
            },
        };
        self.mux.arm_timer();
        served
    }
}

/// An RX chain's buffers if flint can put a packet in it: writable, in guest memory, room for
/// a header and some data.
fn rx_chain(mem: &GuestMemoryMmap, descs: &[Descriptor]) -> Option<Vec<(GuestAddress, usize)>> {
    let bufs = rx_buffers(descs)?;
    bufs.iter()
        .all(|&(addr, len)| mem.get_slice(addr, len).is_ok())
        .then_some(bufs)
}

impl Muxer {
    fn next_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_TOKEN);
        t
    }

    /// Puts the listener and timer in the epoll set (again after a reset or a backoff; one
    /// that is there already is fine).
    fn register(&mut self) {
        if self.registered {
            return;
        }
        let b = &self.backend;
        let timer_fd = std::os::fd::AsRawFd::as_raw_fd(&*lock(&b.timer));
        let add = |fd, token| match b.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        ) {
            Ok(()) => true,
            Err(e) => e.raw_os_error() == Some(libc::EEXIST),
        };
        self.registered = add(b.listener_fd(), LISTENER) & add(timer_fd, TIMER);
    }

    /// The guest's TX chain: a packet, or something to drop (and, if it names a connection,
    /// to reset).
    fn guest_packet(&mut self, mem: &GuestMemoryMmap, descs: Result<&[Descriptor], ChainError>) {
        let Ok(descs) = descs else {
            self.stats.tx_dropped += 1;
            return;
        };
        match packet::read_tx(mem, descs, &mut self.scratch) {
            Ok(p) => self.on_packet(&p.hdr, p.payload),
            Err((_, hdr)) => {
                self.stats.tx_dropped += 1;
                // A header that could be read and is addressed right names a stream whose data
                // just went missing: that stream is over.
                if let Some(hdr) = hdr.filter(|h| self.addressed_right(h)) {
                    self.reset_stream(&hdr);
                }
            }
        }
    }

    fn addressed_right(&self, hdr: &Header) -> bool {
        hdr.src_cid == self.guest_cid && hdr.dst_cid == HOST_CID
    }

    /// The connection `hdr` belongs to is reset (or, without one, the guest is told so).
    fn reset_stream(&mut self, hdr: &Header) {
        let key = key_of(hdr);
        match self.by_key.get(&key).copied() {
            Some(token) if hdr.op == op::RST => self.remove(token),
            Some(token) => self.kill(token),
            None if hdr.op == op::RST => {}
            None => self.stray_rst(key),
        }
    }

    fn on_packet(&mut self, hdr: &Header, payload: usize) {
        // Only the guest's own CID, only to the host: anything else is not to be answered.
        if !self.addressed_right(hdr) {
            self.stats.tx_dropped += 1;
            return;
        }
        if hdr.kind != TYPE_STREAM {
            self.stats.tx_dropped += 1;
            return self.reset_stream(hdr);
        }
        let key = key_of(hdr);
        let Some(token) = self.by_key.get(&key).copied() else {
            match hdr.op {
                op::REQUEST => self.guest_connect(key, hdr),
                op::RST => {}
                _ => self.stray_rst(key),
            }
            return;
        };
        if hdr.op == op::RST {
            return self.remove(token);
        }
        let deadline = Instant::now() + self.timeouts.shutdown;
        let Muxer { conns, scratch, .. } = self;
        let Some(conn) = conns.get_mut(&token) else {
            return;
        };
        if conn.is_dead() {
            return;
        }
        conn.peer_credit(hdr);
        match (conn.state(), hdr.op) {
            (State::Connecting, op::RESPONSE) => conn.on_response(),
            (State::Established, op::RW) => conn.on_rw(&scratch[..payload]),
            (State::Established, op::SHUTDOWN) => conn.on_shutdown(hdr.flags, deadline),
            (State::Established, op::CREDIT_UPDATE) => {}
            (State::Established, op::CREDIT_REQUEST) => conn.on_credit_request(),
            // A REQUEST or RESPONSE out of turn, an unknown op: a broken stream.
            _ => conn.kill(),
        }
        self.refresh(token);
    }

    /// The guest connects to host port `key.local_port`: to `<uds_path>_<port>`, if that
    /// socket listens (without waiting: a full backlog is a refusal too).
    fn guest_connect(&mut self, key: ConnKey, hdr: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.stats.refused += 1;
            return self.stray_rst(key);
        }
        match host::connect(&self.backend.path, &format!("_{}", key.local_port)) {
            Ok(stream) => {
                let token = self.next_token();
                self.conns
                    .insert(token, Connection::guest_initiated(key, stream, hdr));
                self.by_key.insert(key, token);
                self.refresh(token);
            }
            Err(_) => {
                self.stats.refused += 1;
                self.stray_rst(key);
            }
        }
    }

    fn stray_rst(&mut self, key: ConnKey) {
        if self.stray_rsts.len() < MAX_STRAY_RSTS {
            self.stray_rsts.push_back(key);
        } else {
            self.stats.rst_dropped += 1;
        }
    }

    /// Resets connection `token`: its host socket closes, an RST is owed to the guest.
    fn kill(&mut self, token: u64) {
        if let Some(c) = self.conns.get_mut(&token) {
            c.kill();
        }
        self.refresh(token);
    }

    /// Forgets connection `token` (its socket, if still open, leaves the epoll set and
    /// closes).
    fn remove(&mut self, token: u64) {
        if let Some(c) = self.conns.remove(&token) {
            self.by_key.remove(&c.key);
            if c.interest != 0 {
                self.unwatch(c.stream_fd());
            }
        }
    }

    /// Takes a host socket out of the epoll set before it closes. Closing alone would not do
    /// if another process held a copy of the descriptor (a child forked meanwhile): its
    /// events would keep coming under a token nobody has.
    fn unwatch(&self, fd: Option<std::os::fd::RawFd>) {
        if let Some(fd) = fd {
            let _ = self.backend.epoll.ctl(
                ControlOperation::Delete,
                fd,
                EpollEvent::new(EventSet::empty(), 0),
            );
        }
    }

    /// After connection `token` changed: watch its host socket for what it can act on now
    /// (closing it if the connection is over), and queue it for RX if it owes the guest
    /// something.
    fn refresh(&mut self, token: u64) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let want = c.wanted_events();
        if want != c.interest {
            if let Some(fd) = c.stream_fd() {
                let operation = match (c.interest, want) {
                    (0, _) => ControlOperation::Add,
                    (_, 0) => ControlOperation::Delete,
                    _ => ControlOperation::Modify,
                };
                let events = EventSet::from_bits_truncate(want);
                let done = self
                    .backend
                    .epoll
                    .ctl(operation, fd, EpollEvent::new(events, token));
                if done.is_ok() || want == 0 {
                    c.interest = want;
                } else {
                    // A socket flint cannot watch would stall its stream: end it instead.
                    let _ = self.backend.epoll.ctl(
                        ControlOperation::Delete,
                        fd,
                        EpollEvent::new(EventSet::empty(), 0),
                    );
                    c.interest = 0;
                    c.kill();
                }
            }
        }
        // Out of the epoll set by now (a dead connection wants no events).
        c.close();
        if c.wants_rx() && !c.in_rx_list {
            c.in_rx_list = true;
            self.rx_list.push_back(token);
        }
    }

    /// The next packet for the guest, for an RX buffer with `room` bytes of payload space:
    /// its header, payload length (in `scratch`) and the connection it is for.
    fn next_packet(&mut self, room: usize) -> Option<(Header, usize, Option<u64>)> {
        if let Some(key) = self.stray_rsts.pop_front() {
            let hdr = Header {
                src_cid: HOST_CID,
                dst_cid: self.guest_cid,
                src_port: key.local_port,
                dst_port: key.peer_port,
                kind: TYPE_STREAM,
                op: op::RST,
                ..Header::default()
            };
            return Some((hdr, 0, None));
        }
        while let Some(token) = self.rx_list.pop_front() {
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            c.in_rx_list = false;
            let packet = c.next_packet(self.guest_cid, room, &mut self.scratch);
            if c.is_dead() && packet.is_some_and(|(h, _)| h.op == op::RST) {
                // The RST was the last thing it owed.
                self.remove(token);
            } else {
                self.refresh(token);
            }
            if let Some((hdr, len)) = packet {
                return Some((hdr, len, Some(token)));
            }
        }
        None
    }

    /// Takes waiting host clients (a batch; the listener stays readable for the rest). Past
    /// the cap, a client is closed at once.
    fn accept_clients(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match host::accept(self.backend.listener_fd()) {
                Ok(Some(s)) => s,
                Ok(None) => return,
                Err(_) => return self.pause_listener(),
            };
            if self.pending.len() >= MAX_PENDING_CLIENTS {
                continue;
            }
            let token = self.next_token();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let watched = self
                .backend
                .epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .is_ok();
            if watched {
                let deadline = Instant::now() + self.timeouts.connect_line;
                self.pending.insert(
                    token,
                    PendingClient {
                        stream,
                        line: Vec::new(),
                        deadline,
                    },
                );
                // A client usually sends its line with the connection: no need to wait for
                // another wake-up.
                self.read_connect_line(token);
            }
        }
    }

    fn pause_listener(&mut self) {
        let fd = self.backend.listener_fd();
        let out = EpollEvent::new(EventSet::IN, LISTENER);
        if self
            .backend
            .epoll
            .ctl(ControlOperation::Delete, fd, out)
            .is_ok()
        {
            self.listener_resume = Some(Instant::now() + ACCEPT_BACKOFF);
        }
    }

    fn timer_fired(&mut self) {
        // The timer is non-blocking: this drains the expiry count, or finds none.
        let _ = lock(&self.backend.timer).wait();
        self.timer_at = None;
    }

    /// A host socket's event: a waiting client's line, or a connection's data or room.
    fn host_socket_event(&mut self, token: u64, events: u32) {
        if self.pending.contains_key(&token) {
            return self.read_connect_line(token);
        }
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let ev = EventSet::from_bits_truncate(events);
        let gone = EventSet::HANG_UP | EventSet::ERROR;
        // A hang-up or error is found out by the read or write it makes fail.
        if c.interest & super::connection::WANT_IN != 0 && ev.intersects(EventSet::IN | gone) {
            c.data_ready = true;
        }
        if c.interest & super::connection::WANT_OUT != 0 && ev.intersects(EventSet::OUT | gone) {
            c.flush();
        }
        self.refresh(token);
    }

    /// Reads a waiting client's line a byte at a time (so that whatever it sends after the
    /// line stays in the socket for the guest), up to [`MAX_CONNECT_LINE`] bytes.
    fn read_connect_line(&mut self, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        let port = loop {
            let mut byte = [0u8; 1];
            match p.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&p.line),
                Ok(1) if p.line.len() + 1 < MAX_CONNECT_LINE => p.line.push(byte[0]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    return
                }
                // The end of the stream, an error, or a line too long.
                _ => break None,
            }
        };
        // The client leaves the set of waiting ones whatever comes next.
        let Some(p) = self.pending.remove(&token) else {
            return;
        };
        let local_port = match port {
            Some(_) if self.conns.len() < MAX_CONNECTIONS => self.free_port(),
            _ => None,
        };
        let (Some(port), Some(local_port)) = (port, local_port) else {
            return self.unwatch(Some(std::os::fd::AsRawFd::as_raw_fd(&p.stream)));
        };
        let key = ConnKey {
            local_port,
            peer_port: port,
        };
        let deadline = Instant::now() + self.timeouts.request;
        let mut conn = Connection::host_initiated(key, p.stream, deadline);
        // Still registered for input under the same token; refresh() takes it out while the
        // guest decides.
        conn.interest = super::connection::WANT_IN;
        self.conns.insert(token, conn);
        self.by_key.insert(key, token);
        self.refresh(token);
    }

    /// A host port no connection uses (at most MAX_CONNECTIONS are taken, so one of the next
    /// MAX_CONNECTIONS + 1 is free).
    fn free_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_port;
            self.next_port = port
                .checked_add(1)
                .filter(|&p| p < u32::MAX)
                .unwrap_or(FIRST_HOST_PORT);
            if !self.by_key.keys().any(|k| k.local_port == port) {
                return Some(port);
            }
        }
        None
    }

    /// Ends what is past its deadline: clients that never said where to, REQUESTs the guest
    /// never answered, closes whose data the host never took. Brings the listener back after
    /// its backoff.
    fn expire(&mut self, now: Instant) {
        let silent: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&t, _)| t)
            .collect();
        for token in silent {
            if let Some(p) = self.pending.remove(&token) {
                self.unwatch(Some(std::os::fd::AsRawFd::as_raw_fd(&p.stream)));
            }
        }
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(&t, _)| t)
            .collect();
        for token in late {
            self.kill(token);
        }
        if self.listener_resume.is_some_and(|t| t <= now) {
            self.listener_resume = None;
            self.registered = false;
            self.register();
        }
    }

    /// Arms the timer for the nearest deadline, unless it will fire before that already.
    fn arm_timer(&mut self) {
        let next = self
            .pending
            .values()
            .map(|p| p.deadline)
            .chain(self.conns.values().filter_map(|c| c.deadline))
            .chain(self.listener_resume)
            .min();
        let Some(next) = next else {
            return;
        };
        let now = Instant::now();
        if self.timer_at.is_some_and(|t| t <= next && t > now) {
            return;
        }
        // A zero duration would disarm the timer.
        let wait = next
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        if lock(&self.backend.timer).reset(wait, None).is_ok() {
            self.timer_at = Some(now + wait);
        }
    }
}

fn key_of(hdr: &Header) -> ConnKey {
    ConnKey {
        local_port: hdr.dst_port,
        peer_port: hdr.src_port,
    }
}

/// `CONNECT <port>` (a trailing `\r` allowed): the guest port a host client wants.
pub fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("CONNECT"), Some(port), None) => port.parse().ok(),
        _ => None,
    }
}

impl QueueWorker for VsockWorker {
    fn process_queue(&mut self, index: usize) -> Served {
        match index {
            // New RX buffers: what waits for them goes out.
            RX => self.around(|_| Served::Done),
            TX => self.around(Self::transmit),
            // flint sends no events (they are for migration): the buffers stay with it.
            EVENT => Served::Done,
            _ => Served::Done,
        }
    }

    fn backend_fds(&self) -> Vec<std::os::fd::RawFd> {
        vec![std::os::fd::AsRawFd::as_raw_fd(&self.mux.backend.epoll)]
    }

    fn process_backend(&mut self, _index: usize) -> Served {
        self.around(Self::host_events)
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        // Never used for a snapshot: a VM with vsock refuses one (its connections are host
        // sockets).
        vec![self.rx.state(), self.tx.state(), self.event.state()]
    }
}
