//! One vsock stream between a guest port and a host Unix socket: its state, both directions'
//! byte counts and credit (virtio 1.2 §5.10.6.3), and the packets it owes the guest.
//!
//! Guest to host, bytes go straight to the host socket; what the socket does not take waits in
//! a buffer of [`CONN_BUF_SIZE`] bytes, which is the `buf_alloc` flint gives the guest: a guest
//! that honours its credit never overflows it, and one that does not is reset. Host to guest,
//! flint reads the host socket only into a guest RX buffer and only as much as the guest's
//! credit allows, so nothing of the host's is ever buffered in flint.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use super::host::HostStream;
use super::packet::{
    op, Header, HOST_CID, MAX_PAYLOAD, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};

/// Bytes from the guest that one connection holds for its host socket: the `buf_alloc` flint
/// advertises.
pub const CONN_BUF_SIZE: u32 = 256 * 1024;
/// [`CONN_BUF_SIZE`] as a buffer length.
const CONN_BUF_LEN: usize = 256 * 1024;
const _: () = assert!(CONN_BUF_SIZE as usize == CONN_BUF_LEN);

/// A connection by its ports: the host's (flint's side, CID 2) and the guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnKey {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A host client asked for it: flint asks the guest (REQUEST) and waits for its RESPONSE.
    Connecting,
    Established,
    /// Over: the host socket is closed and an RST is owed to the guest; once it is sent the
    /// connection is gone.
    Dead,
}

/// Control packets owed to the guest.
const P_REQUEST: u8 = 1;
const P_RESPONSE: u8 = 2;
const P_CREDIT_UPDATE: u8 = 4;
const P_CREDIT_REQUEST: u8 = 8;
const P_SHUTDOWN: u8 = 16;

/// epoll interest, as the muxer registers it.
pub const WANT_IN: u32 = libc::EPOLLIN as u32;
pub const WANT_OUT: u32 = libc::EPOLLOUT as u32;

pub struct Connection {
    pub key: ConnKey,
    stream: Option<HostStream>,
    state: State,
    pending: u8,
    /// Guest to host: bytes waiting for the host socket, at most CONN_BUF_SIZE.
    to_host: VecDeque<u8>,
    /// Bytes taken from the guest, and of those written to the host (both wrapping, as the
    /// header's counters do).
    rx_cnt: u32,
    fwd_cnt: u32,
    /// `fwd_cnt` as the guest last heard it.
    fwd_cnt_told: u32,
    /// Host to guest: bytes sent, and the guest's receive buffer as it last described it.
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// A CREDIT_REQUEST went out since the guest last spoke.
    credit_requested: bool,
    /// SHUTDOWN flags the guest sent, and those flint sent (or owes).
    peer_shutdown: u32,
    shutdown_told: u32,
    /// The host socket's read side ended.
    host_eof: bool,
    /// The host socket's write side was shut (after the guest's SHUTDOWN SEND).
    host_write_shut: bool,
    /// epoll said the host socket is readable and it has not been read dry since.
    pub data_ready: bool,
    /// The events registered for the host socket (0: not registered).
    pub interest: u32,
    /// Queued for the RX pass.
    pub in_rx_list: bool,
    /// When an unanswered REQUEST, or a guest's close waiting for its data to drain, gives up.
    pub deadline: Option<Instant>,
}

impl Connection {
    fn new(key: ConnKey, stream: HostStream, state: State, pending: u8) -> Connection {
        Connection {
            key,
            stream: Some(stream),
            state,
            pending,
            to_host: VecDeque::new(),
            rx_cnt: 0,
            fwd_cnt: 0,
            fwd_cnt_told: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            credit_requested: false,
            peer_shutdown: 0,
            shutdown_told: 0,
            host_eof: false,
            host_write_shut: false,
            data_ready: false,
            interest: 0,
            in_rx_list: false,
            deadline: None,
        }
    }

    /// A host client's connection to guest port `key.peer_port`: a REQUEST is owed.
    pub fn host_initiated(key: ConnKey, stream: HostStream, deadline: Instant) -> Connection {
        let mut c = Connection::new(key, stream, State::Connecting, P_REQUEST);
        c.deadline = Some(deadline);
        c
    }

    /// The guest's REQUEST `hdr`, connected to the host socket `stream`: a RESPONSE is owed.
    pub fn guest_initiated(key: ConnKey, stream: HostStream, hdr: &Header) -> Connection {
        let mut c = Connection::new(key, stream, State::Established, P_RESPONSE);
        c.peer_credit(hdr);
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_dead(&self) -> bool {
        self.state == State::Dead
    }

    pub fn stream_fd(&self) -> Option<std::os::fd::RawFd> {
        self.stream.as_ref().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// Every packet from the guest describes its receive buffer.
    pub fn peer_credit(&mut self, hdr: &Header) {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        self.credit_requested = false;
    }

    /// Bytes the guest can take now. A guest whose counters make no sense gets nothing.
    pub fn credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Resets the connection: only an RST is owed to the guest now, and the host socket is
    /// to be closed (by the muxer, once it took it out of the epoll set: [`Self::close`]).
    pub fn kill(&mut self) {
        self.state = State::Dead;
        self.to_host = VecDeque::new();
        self.pending = 0;
        self.data_ready = false;
        self.deadline = None;
    }

    /// Closes the host socket of a dead connection (the client sees the end of its stream).
    pub fn close(&mut self) {
        if self.is_dead() {
            self.stream = None;
        }
    }

    /// The guest accepted a host client's connection: tell the client which port it got.
    pub fn on_response(&mut self) {
        if self.state != State::Connecting {
            return self.kill();
        }
        self.state = State::Established;
        self.deadline = None;
        // A fresh socket's buffer always takes a line this short; if not, the client is gone.
        let line = format!("OK {}\n", self.key.local_port);
        let sent = self.stream.as_ref().map(|s| s.send(line.as_bytes()));
        if !matches!(sent, Some(Ok(n)) if n == line.len()) {
            self.kill();
        }
    }

    /// Data from the guest (`RW`). A guest that sends after its SHUTDOWN SEND or past the
    /// credit it was given is reset: flint never buffers more than CONN_BUF_SIZE.
    pub fn on_rw(&mut self, data: &[u8]) {
        if self.state != State::Established || self.peer_shutdown & SHUTDOWN_SEND != 0 {
            return self.kill();
        }
        if data.len() > CONN_BUF_LEN - self.to_host.len() {
            return self.kill();
        }
        if data.is_empty() {
            return;
        }
        // At most MAX_PAYLOAD bytes (the packet reader's bound).
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.rx_cnt = self.rx_cnt.wrapping_add(len);
        let mut rest = data;
        if self.to_host.is_empty() {
            match self.stream.as_ref().map(|s| s.send(data)) {
                Some(Ok(n)) => {
                    rest = &data[n.min(data.len())..];
                    self.forwarded(n);
                }
                Some(Err(e)) if retry(&e) => {}
                _ => return self.kill(),
            }
        }
        self.to_host.extend(rest);
        self.check_credit_update();
    }

    /// The host socket can take more: write what waits.
    pub fn flush(&mut self) {
        while !self.to_host.is_empty() {
            let Some(stream) = &self.stream else { return };
            let (front, _) = self.to_host.as_slices();
            match stream.send(front) {
                Ok(n) => {
                    self.to_host.drain(..n.min(front.len()));
                    self.forwarded(n);
                }
                Err(e) if retry(&e) => break,
                Err(_) => return self.kill(),
            }
        }
        if self.to_host.is_empty() {
            // Nothing kept for a host that is slow no more.
            self.to_host.shrink_to_fit();
        }
        self.after_progress();
    }

    fn forwarded(&mut self, n: usize) {
        // At most what was buffered or sent: within CONN_BUF_SIZE.
        self.fwd_cnt = self
            .fwd_cnt
            .wrapping_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Tells the guest of freed space once it believes less than half its credit is left: a
    /// guest waiting for credit always hears of it, without an update for every packet.
    fn check_credit_update(&mut self) {
        let unreported = self.fwd_cnt.wrapping_sub(self.fwd_cnt_told);
        let believed_used = self.rx_cnt.wrapping_sub(self.fwd_cnt_told);
        if unreported > 0 && CONN_BUF_SIZE.saturating_sub(believed_used) < CONN_BUF_SIZE / 2 {
            self.pending |= P_CREDIT_UPDATE;
        }
    }

    pub fn on_credit_request(&mut self) {
        self.pending |= P_CREDIT_UPDATE;
    }

    /// The guest's SHUTDOWN: it will send (SEND) or take (RCV) nothing more. `deadline` is
    /// when a full close whose data the host does not take gives up.
    pub fn on_shutdown(&mut self, flags: u32, deadline: Instant) {
        if self.state != State::Established {
            return self.kill();
        }
        self.peer_shutdown |= flags & SHUTDOWN_BOTH;
        if self.peer_shutdown == SHUTDOWN_BOTH && !self.to_host.is_empty() {
            self.deadline = Some(deadline);
        }
        self.after_progress();
    }

    /// After data moved or a side closed: pass the guest's end of stream on to the host once
    /// its data is out, and end the connection when neither direction can carry more.
    fn after_progress(&mut self) {
        if self.state != State::Established {
            return;
        }
        if self.peer_shutdown & SHUTDOWN_SEND != 0
            && self.to_host.is_empty()
            && !self.host_write_shut
        {
            if let Some(s) = &self.stream {
                s.shutdown_write();
            }
            self.host_write_shut = true;
        }
        self.check_credit_update();
        let guest_done = self.peer_shutdown & SHUTDOWN_SEND != 0 && self.to_host.is_empty();
        let host_done = self.host_eof || self.peer_shutdown & SHUTDOWN_RCV != 0;
        if guest_done && host_done {
            // Both ways are closed: the RST ends it for the guest too (as Linux expects).
            self.kill();
        }
    }

    /// Whether host data may go to the guest now.
    fn can_send_data(&self) -> bool {
        self.state == State::Established
            && self.stream.is_some()
            && !self.host_eof
            && self.peer_shutdown & SHUTDOWN_RCV == 0
            && self.credit() > 0
    }

    /// Whether the RX pass has something for this connection.
    pub fn wants_rx(&self) -> bool {
        self.is_dead() || self.pending != 0 || (self.data_ready && self.can_send_data())
    }

    /// The epoll events to watch the host socket for now. Nothing while connecting (the client
    /// waits for its `OK`), nothing to read while the guest has no credit or data is already
    /// known to wait, and writability only while bytes wait for the host.
    pub fn wanted_events(&self) -> u32 {
        if self.state != State::Established {
            return 0;
        }
        let mut want = 0;
        if !self.data_ready && self.can_send_data() {
            want |= WANT_IN;
        }
        if !self.to_host.is_empty() {
            want |= WANT_OUT;
        }
        want
    }

    /// A header from flint for this connection: it carries flint's receive buffer, which
    /// counts as a credit update.
    fn header(&mut self, guest_cid: u64, op: u16, flags: u32, len: u32) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        self.pending &= !P_CREDIT_UPDATE;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// The next packet for the guest, in an RX buffer with `room` bytes after the header: its
    /// header, and for data the payload's length at the front of `scratch`. `None` if nothing
    /// is owed after all (the host socket had no data).
    pub fn next_packet(
        &mut self,
        guest_cid: u64,
        room: usize,
        scratch: &mut [u8],
    ) -> Option<(Header, usize)> {
        let control = |c: &mut Connection, bit: u8, op: u16, flags: u32| {
            c.pending &= !bit;
            Some((c.header(guest_cid, op, flags, 0), 0))
        };
        if self.is_dead() {
            return Some((self.header(guest_cid, op::RST, 0, 0), 0));
        }
        if self.pending & P_REQUEST != 0 {
            return control(self, P_REQUEST, op::REQUEST, 0);
        }
        if self.pending & P_RESPONSE != 0 {
            return control(self, P_RESPONSE, op::RESPONSE, 0);
        }
        if self.pending & P_CREDIT_UPDATE != 0 {
            return control(self, P_CREDIT_UPDATE, op::CREDIT_UPDATE, 0);
        }
        if self.data_ready && self.can_send_data() {
            let credit = usize::try_from(self.credit()).unwrap_or(usize::MAX);
            let n = room.min(credit).min(MAX_PAYLOAD).min(scratch.len());
            let read = match &self.stream {
                Some(s) if n > 0 => s.read(&mut scratch[..n]),
                _ => Err(io::ErrorKind::WouldBlock.into()),
            };
            match read {
                Ok(0) => {
                    // The host sent all it will: the guest hears SHUTDOWN SEND after the data.
                    self.host_eof = true;
                    self.data_ready = false;
                    self.shutdown_told |= SHUTDOWN_SEND;
                    self.pending |= P_SHUTDOWN;
                    self.after_progress();
                    if self.is_dead() {
                        return Some((self.header(guest_cid, op::RST, 0, 0), 0));
                    }
                }
                Ok(k) => {
                    // k <= n <= MAX_PAYLOAD.
                    let len = u32::try_from(k).unwrap_or(u32::MAX);
                    self.tx_cnt = self.tx_cnt.wrapping_add(len);
                    if self.credit() == 0 && !self.credit_requested {
                        self.credit_requested = true;
                        self.pending |= P_CREDIT_REQUEST;
                    }
                    return Some((self.header(guest_cid, op::RW, 0, len), k));
                }
                Err(e) if retry(&e) => self.data_ready = false,
                Err(_) => {
                    self.kill();
                    return Some((self.header(guest_cid, op::RST, 0, 0), 0));
                }
            }
        }
        if self.pending & P_CREDIT_REQUEST != 0 {
            return control(self, P_CREDIT_REQUEST, op::CREDIT_REQUEST, 0);
        }
        if self.pending & P_SHUTDOWN != 0 {
            let flags = self.shutdown_told;
            return control(self, P_SHUTDOWN, op::SHUTDOWN, flags);
        }
        None
    }

    /// Bytes waiting for the host (for tests and bounds checks).
    pub fn buffered(&self) -> usize {
        self.to_host.len()
    }
}

/// An error that means "not now" rather than "broken".
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
