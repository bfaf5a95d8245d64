//! The TCP transport between cluster members. The receiving side belongs to the node's own
//! thread: [`Transport::wait`] sleeps in one `poll` over the listener, every member's
//! connection and a wake-up socket (which [`Waker`] rings when a proposal or an order is
//! queued for the node), and [`Transport::receive`] reads what has arrived and hands the
//! messages over on that same thread. So a frame from a peer wakes the thread that steps it,
//! with no reader thread between the socket and the node (each hop between threads is a
//! wake-up, the largest part of a round to the followers on a loaded machine). Sending has one
//! writer thread per peer with a bounded queue. Frames are the versioned framing of
//! [`crate::frame`]; a connection whose bytes are not a valid frame for this node and cluster
//! is closed, and the refusal counted and logged, without harm to the node. Sending never
//! blocks the node's thread: a full queue or a peer that cannot be reached drops the frame,
//! and Raft sends again (appends are retried, heartbeats recur).
//!
//! When a connection from a member ends, a short-lived thread asks that member's replication
//! port whether anyone still listens there: a refused connection means the member's process
//! has ended (a process that dies closes its listener with its connections), and the node is
//! told ([`Incoming::PeerGone`]), so that a follower whose leader died need not wait out the
//! election timeout ([`crate::Node::peer_gone`]). A host that goes silent (power loss, a cut
//! cable) refuses nothing: that is found by the election timeout alone. What the transport
//! deliberately does not know: Raft. It reports what it saw and decides nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use raft::eraftpb::Message;

use crate::frame::{decode_frame, encode_frame, Decoded};

/// Bytes queued for one peer's writer at most (a snapshot's frame and then some); more are
/// dropped (Raft sends again).
const PEER_QUEUE_BYTES_MAX: usize = 96 << 20;
/// How long the writer waits for a peer's socket to take more bytes before it gives the
/// connection up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a connection attempt to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// The wait before connecting again to a peer that could not be reached.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);
/// After a member's connection ends: how many times its port is tried, and how far apart.
/// A dying process may close its connections a moment before its listener, and a listener
/// still open takes connections into its backlog, so one accepted try proves nothing.
const GONE_PROBES: u32 = 4;
const GONE_PROBE_PAUSE: Duration = Duration::from_millis(10);
/// How long one of those tries may take: a refusal on a live network is immediate.
const GONE_PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// A connection to a peer that has carried nothing for this long is checked before the next
/// write, in case the peer has closed it meanwhile (see [`closed_by_peer`]).
const IDLE_CHECK_AFTER: Duration = Duration::from_millis(20);
/// Bytes read from one connection per call at most.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Bytes read from one connection per turn at most, so that a snapshot's large frame does
/// not hold the node's thread (the rest is read on the next turns).
const READ_PER_TURN_MAX: usize = 8 << 20;
/// Connections from peers held at once at most; a new one beyond it closes the oldest (a
/// member reconnects after a restart, so old ones can linger until they are read to the end).
const CONNECTIONS_MAX: usize = 64;
/// How long the listener is left out of the waits after an accept failed.
const ACCEPT_PAUSE_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// Counters of the transport, read from any thread.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames handed to a peer's socket.
    pub frames_sent: AtomicU64,
    /// Of those, frames the node's thread wrote itself (the rest went by the writer thread).
    pub frames_sent_directly: AtomicU64,
    /// Frames dropped: a full queue or an unreachable peer.
    pub frames_dropped: AtomicU64,
    /// Frames received and handed to the node.
    pub frames_received: AtomicU64,
    /// Connections closed because they sent something that is not a valid frame.
    pub frames_refused: AtomicU64,
    /// Connections closed to make room for a new one ([`CONNECTIONS_MAX`] held).
    pub connections_evicted: AtomicU64,
    /// Times a member's connection ended and its replication port then refused a
    /// connection: its process had ended ([`Incoming::PeerGone`]).
    pub peers_gone: AtomicU64,
}

/// What the transport hands the node's thread.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A message from a member.
    Message(Message),
    /// This member's connection ended and its replication port refused a connection
    /// afterwards: the process that was that member has ended (another may start there).
    PeerGone(u64),
}

/// One member of the cluster, as the transport reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress {
    /// Its node id.
    pub node_id: u64,
    /// Its replication address.
    pub address: SocketAddr,
}

/// The transport, owned by the node's thread: it sends through the writer threads and
/// receives on the node's thread itself.
pub struct Transport {
    cluster_id: u64,
    node_id: u64,
    peers: HashMap<u64, Peer>,
    members: HashMap<u64, SocketAddr>,
    stats: Arc<TransportStats>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    listen_address: SocketAddr,
    listener: Option<TcpListener>,
    /// Whether the last wait found a connection waiting to be accepted.
    accept_ready: bool,
    /// After a failed accept, when the listener is waited on again.
    accept_paused_until: Option<std::time::Instant>,
    connections: Vec<Connection>,
    chunk: Vec<u8>,
    /// Members found gone by a probe thread, for the node.
    gone: Receiver<u64>,
    gone_sender: Sender<u64>,
    probes: Vec<JoinHandle<()>>,
    waker: Waker,
    wake_receiver: UnixStream,
}

/// One connection a peer opened to this node.
struct Connection {
    stream: TcpStream,
    from: SocketAddr,
    /// The member its frames came from, once one did.
    sender: Option<u64>,
    /// Bytes read and not yet taken as frames.
    buffer: Vec<u8>,
    /// Bytes of `buffer` already taken.
    used: usize,
    /// Whether the last turn stopped at its limit of messages, so that whole frames may
    /// still wait in `buffer`.
    backlog: bool,
    /// Whether the last wait found it readable (or closed).
    readable: bool,
}

/// Wakes the node's thread from [`Transport::wait`]; cheap to clone, usable from any thread.
/// Ring it after queuing something for the node (a proposal, an order): it costs a system
/// call only when the node's thread sleeps.
#[derive(Clone)]
pub struct Waker {
    asleep: Arc<AtomicBool>,
    socket: Arc<UnixStream>,
}

impl Waker {
    /// Wakes the node's thread if it sleeps in [`Transport::wait`].
    pub fn wake(&self) {
        // Pairs with the fence in `Transport::wait`: either that thread sees what was queued
        // before this call, or this call sees it asleep and writes.
        fence(Ordering::SeqCst);
        if self.asleep.swap(false, Ordering::SeqCst) {
            // A full socket means a wake-up is already waiting to be read.
            let _ = (&*self.socket).write(&[1]);
        }
    }
}

impl Transport {
    /// Listens on `listener` (whose connections this node's thread reads, see
    /// [`Transport::receive`]) and starts one writer per peer.
    pub fn start(
        cluster_id: u64,
        node_id: u64,
        listener: TcpListener,
        peers: &[PeerAddress],
    ) -> std::io::Result<Transport> {
        let stats = Arc::new(TransportStats::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let listen_address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let members: HashMap<u64, SocketAddr> = peers
            .iter()
            .map(|peer| (peer.node_id, peer.address))
            .collect();
        let mut threads = Vec::new();
        let mut senders = HashMap::new();
        for peer in peers.iter().filter(|peer| peer.node_id != node_id) {
            let link = Arc::new(Link::default());
            let stats = Arc::clone(&stats);
            let stopping = Arc::clone(&stopping);
            let address = peer.address;
            let writer_link = Arc::clone(&link);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("repl-to-{}", peer.node_id))
                    .spawn(move || write_loop(address, &writer_link, &stats, &stopping))?,
            );
            senders.insert(
                peer.node_id,
                Peer {
                    link,
                    pending: Vec::new(),
                    pending_frames: 0,
                },
            );
        }
        let (wake_sender, wake_receiver) = UnixStream::pair()?;
        wake_sender.set_nonblocking(true)?;
        wake_receiver.set_nonblocking(true)?;
        let (gone_sender, gone) = unbounded();
        Ok(Transport {
            cluster_id,
            node_id,
            peers: senders,
            members,
            stats,
            stopping,
            threads,
            listen_address,
            listener: Some(listener),
            accept_ready: true,
            accept_paused_until: None,
            connections: Vec::new(),
            chunk: vec![0u8; READ_CHUNK_BYTES],
            gone,
            gone_sender,
            probes: Vec::new(),
            waker: Waker {
                asleep: Arc::new(AtomicBool::new(false)),
                socket: Arc::new(wake_sender),
            },
            wake_receiver,
        })
    }

    /// Adds `message` to what leaves for its addressee at the next [`Transport::flush`].
    pub fn send(&mut self, message: &Message) {
        let Some(peer) = self.peers.get_mut(&message.to) else {
            return;
        };
        encode_frame(self.cluster_id, message, &mut peer.pending);
        peer.pending_frames += 1;
    }

    /// Sends what [`Transport::send`] gathered, one write per peer: on this thread, without
    /// waiting, when the peer's connection is open and its writer has nothing queued (a
    /// wake-up of the writer thread would cost as much as the write); otherwise, or for what
    /// the socket does not take at once, through the peer's writer thread, which connects
    /// and waits for the socket. Never blocks; drops what the writer's queue cannot take.
    pub fn flush(&mut self) {
        for peer in self.peers.values_mut() {
            if peer.pending.is_empty() {
                continue;
            }
            let frames = std::mem::take(&mut peer.pending_frames);
            let mut state = peer.link.state.lock().expect("a peer link's lock");
            let mut written = 0;
            if !state.busy && state.queued.is_empty() {
                if state.stream.as_ref().is_some_and(|stream| {
                    state.last_written.elapsed() >= IDLE_CHECK_AFTER && closed_by_peer(stream)
                }) {
                    state.drop_stream(&self.stats);
                }
                if let Some(stream) = &state.stream {
                    match write_some(stream, &peer.pending) {
                        Ok(count) => written = count,
                        Err(_) => state.drop_stream(&self.stats),
                    }
                    state.last_written = std::time::Instant::now();
                }
            }
            if written == peer.pending.len() {
                self.stats.frames_sent.fetch_add(frames, Ordering::Relaxed);
                self.stats
                    .frames_sent_directly
                    .fetch_add(frames, Ordering::Relaxed);
            } else if written > 0 {
                // A frame is half on this connection: the rest must follow on it, whatever
                // the queue's bound, or go with it (`LinkState::drop_stream`).
                state.queued.extend_from_slice(&peer.pending[written..]);
                state.queued_frames += frames;
                state.tail = peer.pending.len() - written;
                state.tail_frames = frames;
                peer.link.work.notify_one();
            } else if state.queued.len() + peer.pending.len() > PEER_QUEUE_BYTES_MAX {
                self.stats
                    .frames_dropped
                    .fetch_add(frames, Ordering::Relaxed);
            } else {
                state.queued.extend_from_slice(&peer.pending);
                state.queued_frames += frames;
                peer.link.work.notify_one();
            }
            drop(state);
            peer.pending.clear();
        }
    }

    /// What wakes this transport's [`Transport::wait`] from another thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.stats)
    }

    /// The address it listens on.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen_address
    }

    /// Sleeps until a connection has something to read, a peer connects, a member is found
    /// gone, the [`Waker`] rings, or `timeout` passes, and notes which connections to read.
    /// Does not sleep (but still notes) if whole frames already read wait to be taken, or if
    /// `idle` (asked after this thread has announced that it sleeps) says something else is
    /// waiting.
    pub fn wait(&mut self, timeout: Duration, idle: impl Fn() -> bool) {
        let mut timeout = timeout;
        if self.connections.iter().any(|c| c.backlog) || !self.gone.is_empty() {
            timeout = Duration::ZERO;
        }
        if !timeout.is_zero() {
            self.waker.asleep.store(true, Ordering::SeqCst);
            // Pairs with the fence in `Waker::wake`.
            fence(Ordering::SeqCst);
            if !idle() || !self.gone.is_empty() {
                timeout = Duration::ZERO;
            }
        }
        let mut fds = Vec::with_capacity(self.connections.len() + 2);
        fds.push(self.wake_receiver.as_raw_fd());
        if self
            .accept_paused_until
            .is_some_and(|until| std::time::Instant::now() >= until)
        {
            self.accept_paused_until = None;
        }
        let listener = self
            .listener
            .as_ref()
            .filter(|_| self.accept_paused_until.is_none());
        fds.push(listener.map_or(-1, |listener| listener.as_raw_fd()));
        fds.extend(self.connections.iter().map(|c| c.stream.as_raw_fd()));
        let ready = poll_readable(&fds, timeout);
        self.waker.asleep.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready[0] {
            // Each ring writes a byte only when it finds this thread asleep, so a few at most
            // wait; what a full read leaves, the next wait reads.
            let mut drained = [0u8; 256];
            let _ = (&self.wake_receiver).read(&mut drained);
        }
        self.accept_ready = ready[1];
        for (connection, ready) in self.connections.iter_mut().zip(&ready[2..]) {
            connection.readable = *ready;
        }
    }

    /// Accepts the connections [`Transport::wait`] found waiting, reads every connection it
    /// found readable, and hands `deliver` at most `max` messages (and every member found
    /// gone); returns how many messages it handed over (more may wait: the next wait then
    /// does not sleep). A connection that sends anything but a valid frame of this cluster
    /// for this node, from one member, is closed and counted.
    pub fn receive(&mut self, max: usize, deliver: &mut dyn FnMut(Incoming)) -> usize {
        for member in self.gone.try_iter() {
            deliver(Incoming::PeerGone(member));
        }
        if std::mem::take(&mut self.accept_ready) {
            self.accept();
        }
        let mut delivered = 0;
        let mut index = 0;
        while index < self.connections.len() && delivered < max {
            if !self.connections[index].readable && !self.connections[index].backlog {
                index += 1;
                continue;
            }
            match self.read_connection(index, max - delivered, deliver) {
                Ok(count) => {
                    delivered += count;
                    index += 1;
                }
                Err(ended) => {
                    let connection = self.connections.remove(index);
                    if let (Ended::ByPeer, Some(member)) = (ended, connection.sender) {
                        self.probe(member);
                    }
                }
            }
        }
        delivered
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    if self.connections.len() >= CONNECTIONS_MAX {
                        // The oldest that never sent a member's frame, else the oldest.
                        let evict = self
                            .connections
                            .iter()
                            .position(|c| c.sender.is_none())
                            .unwrap_or(0);
                        let evicted = self.connections.remove(evict);
                        self.stats
                            .connections_evicted
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            from = %evicted.from,
                            member = evicted.sender,
                            "replication: {CONNECTIONS_MAX} connections held; closed one to \
                             take a new one"
                        );
                    }
                    self.connections.push(Connection {
                        stream,
                        from,
                        sender: None,
                        buffer: Vec::new(),
                        used: 0,
                        backlog: false,
                        readable: true,
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(error) => {
                    // Out of descriptors, say: the connection stays in the backlog and the
                    // listener stays readable, so it is left out of the waits for a while
                    // rather than tried on every turn.
                    tracing::warn!("replication: accepting a connection failed: {error}");
                    self.accept_paused_until =
                        Some(std::time::Instant::now() + ACCEPT_PAUSE_AFTER_FAILURE);
                    return;
                }
            }
        }
    }

    /// Reads what connection `index` has and delivers up to `max` of its messages; the count
    /// delivered, or how it ended.
    fn read_connection(
        &mut self,
        index: usize,
        max: usize,
        deliver: &mut dyn FnMut(Incoming),
    ) -> Result<usize, Ended> {
        let connection = &mut self.connections[index];
        connection.readable = false;
        let mut ended = None;
        // A connection with whole frames still waiting is read again only once they are
        // taken, so that one peer cannot grow its buffer without bound.
        if !connection.backlog {
            let mut read_this_turn = 0;
            while read_this_turn < READ_PER_TURN_MAX {
                match connection.stream.read(&mut self.chunk) {
                    Ok(0) => {
                        ended = Some(Ended::ByPeer);
                        break;
                    }
                    Ok(read) => {
                        connection.buffer.extend_from_slice(&self.chunk[..read]);
                        read_this_turn += read;
                        if read < self.chunk.len() {
                            // Read dry for now (one call saved a turn): what comes next,
                            // its end too, makes the next wait find it readable.
                            break;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        ended = Some(Ended::ByPeer);
                        break;
                    }
                }
            }
        }
        let mut delivered = 0;
        connection.backlog = false;
        loop {
            if delivered == max {
                connection.backlog = true;
                break;
            }
            let bytes = &connection.buffer[connection.used..];
            match decode_frame(self.cluster_id, self.node_id, bytes) {
                Ok(Decoded::Incomplete(_)) => break,
                Ok(Decoded::Frame {
                    route,
                    message,
                    used,
                }) => {
                    connection.used += used;
                    if !self.members.contains_key(&route.from) || route.from == self.node_id {
                        refuse(
                            &self.stats,
                            connection.from,
                            &format!("a frame from node {}, not a member", route.from),
                        );
                        return Err(Ended::Refused);
                    }
                    if let Some(member) = connection.sender.filter(|member| *member != route.from) {
                        refuse(
                            &self.stats,
                            connection.from,
                            &format!(
                                "a frame from node {} on a connection of node {member}",
                                route.from
                            ),
                        );
                        return Err(Ended::Refused);
                    }
                    connection.sender = Some(route.from);
                    self.stats.frames_received.fetch_add(1, Ordering::Relaxed);
                    deliver(Incoming::Message(*message));
                    delivered += 1;
                }
                Err(error) => {
                    refuse(&self.stats, connection.from, &error.to_string());
                    return Err(Ended::Refused);
                }
            }
        }
        if connection.used == connection.buffer.len() {
            connection.buffer.clear();
            connection.used = 0;
        } else if connection.used >= READ_CHUNK_BYTES {
            connection.buffer.drain(..connection.used);
            connection.used = 0;
        }
        // The peer's last whole frames are delivered before its end is (the end is read
        // again on the next turn); a partial frame at the end is dropped with it.
        match ended {
            Some(ended) if !connection.backlog => Err(ended),
            _ => Ok(delivered),
        }
    }

    /// Asks, on a thread of its own, whether `member`'s port still takes connections; if it
    /// refuses them, the member is gone, and the node is told on its next turn.
    fn probe(&mut self, member: u64) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        self.probes.retain(|probe| !probe.is_finished());
        let address = self.members[&member];
        let stopping = Arc::clone(&self.stopping);
        let stats = Arc::clone(&self.stats);
        let gone = self.gone_sender.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("repl-probe".into())
            .spawn(move || {
                if refuses_connections(address, &stopping) {
                    stats.peers_gone.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        member,
                        "replication: node {member}'s connection ended and its replication \
                         port refuses connections: its process has ended"
                    );
                    let _ = gone.send(member);
                    waker.wake();
                }
            });
        if let Ok(probe) = spawned {
            self.probes.push(probe);
        }
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The peer closed it (or it failed).
    ByPeer,
    /// This node closed it for a bad frame.
    Refused,
}

/// Waits until one of `fds` is readable (or closed) or `timeout` passes; which are. A
/// negative descriptor is passed over, as `poll` does.
fn poll_readable(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
    poll_fds(fds, libc::POLLIN, timeout)
}

/// Waits until one of `fds` is ready for `events` (or closed or failed) or `timeout`
/// passes; which are.
#[allow(unsafe_code)]
fn poll_fds(fds: &[RawFd], events: libc::c_short, timeout: Duration) -> Vec<bool> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(3600) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `polled` is a live, writable array of `polled.len()` pollfd structs, the
    // timespec outlives the call, and a null signal mask keeps the thread's own.
    let result = unsafe {
        libc::ppoll(
            polled.as_mut_ptr(),
            polled.len() as libc::nfds_t,
            &timeout,
            std::ptr::null(),
        )
    };
    if result < 0 {
        // Interrupted (EINTR) or refused: as if all were ready; the caller finds out.
        return vec![true; fds.len()];
    }
    polled.iter().map(|fd| fd.revents != 0).collect()
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // The listener closes before the connections, so that the peers' probes find the
        // port refusing as soon as this node's connections end.
        self.listener = None;
        self.connections.clear();
        for peer in self.peers.values() {
            // Under the lock, so that a writer about to wait cannot miss it.
            let _state = peer.link.state.lock();
            peer.link.work.notify_all();
        }
        self.peers.clear();
        for thread in self.threads.drain(..).chain(self.probes.drain(..)) {
            let _ = thread.join();
        }
    }
}

/// Whether `address` refuses a connection within a few tries (see [`GONE_PROBES`]); a try
/// that times out (a silent host or network) ends the tries with false.
fn refuses_connections(address: SocketAddr, stopping: &AtomicBool) -> bool {
    for _ in 0..GONE_PROBES {
        if stopping.load(Ordering::Relaxed) {
            return false;
        }
        match TcpStream::connect_timeout(&address, GONE_PROBE_TIMEOUT) {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return true,
            Err(_) => return false,
            Ok(_) => std::thread::sleep(GONE_PROBE_PAUSE),
        }
    }
    false
}

fn refuse(stats: &TransportStats, from: SocketAddr, reason: &str) {
    stats.frames_refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%from, reason, "replication: closed a connection");
}

/// What the node's thread gathers for one peer in a turn, and the link it leaves by.
struct Peer {
    link: Arc<Link>,
    pending: Vec<u8>,
    pending_frames: u64,
}

/// One peer's connection, shared by the node's thread and the peer's writer thread.
#[derive(Default)]
struct Link {
    state: std::sync::Mutex<LinkState>,
    /// Rung when bytes are queued for the writer (and at the stop).
    work: std::sync::Condvar,
}

struct LinkState {
    /// The connection (non-blocking), once the writer has made it.
    stream: Option<Arc<TcpStream>>,
    /// Bytes for the writer to send, in order, before anything else may be written.
    queued: Vec<u8>,
    queued_frames: u64,
    /// Whether the writer is writing bytes it took from `queued` (nothing may be written
    /// around them meanwhile).
    busy: bool,
    last_written: std::time::Instant,
    /// Leading bytes of `queued` that finish a frame the node's thread began on `stream`
    /// (and the frames written with them): they are dropped with that connection.
    tail: usize,
    tail_frames: u64,
}

impl LinkState {
    /// Gives the connection up, with what can only follow on it.
    fn drop_stream(&mut self, stats: &TransportStats) {
        self.stream = None;
        if self.tail > 0 {
            self.queued.drain(..self.tail);
            self.queued_frames -= self.tail_frames;
            stats
                .frames_dropped
                .fetch_add(self.tail_frames, Ordering::Relaxed);
            self.tail = 0;
            self.tail_frames = 0;
        }
    }
}

impl Default for LinkState {
    fn default() -> LinkState {
        LinkState {
            stream: None,
            queued: Vec::new(),
            queued_frames: 0,
            busy: false,
            last_written: std::time::Instant::now(),
            tail: 0,
            tail_frames: 0,
        }
    }
}

/// Writes what a non-blocking `stream` takes of `bytes` now; how much.
fn write_some(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match (&*stream).write(&bytes[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(count) => written += count,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(written)
}

/// Writes all of `bytes` to a non-blocking `stream`, waiting for it to take more at most
/// [`WRITE_TIMEOUT`] each time.
fn write_all_waiting(
    stream: &TcpStream,
    bytes: &[u8],
    stopping: &AtomicBool,
) -> std::io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        if stopping.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        written += write_some(stream, &bytes[written..])?;
        if written < bytes.len()
            && !poll_fds(&[stream.as_raw_fd()], libc::POLLOUT, WRITE_TIMEOUT)[0]
        {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
    }
    Ok(())
}

/// A peer's writer: connects (again, after a failure or a close) and sends what the node's
/// thread queued for it.
fn write_loop(address: SocketAddr, link: &Link, stats: &TransportStats, stopping: &AtomicBool) {
    let mut state = link.state.lock().expect("a peer link's lock");
    while !stopping.load(Ordering::Relaxed) {
        if state.queued.is_empty() {
            state = link
                .work
                .wait_timeout(state, Duration::from_millis(100))
                .expect("a peer link's lock")
                .0;
            continue;
        }
        if state.stream.as_ref().is_some_and(|stream| {
            state.last_written.elapsed() >= IDLE_CHECK_AFTER && closed_by_peer(stream)
        }) {
            state.drop_stream(stats);
        }
        let Some(stream) = state.stream.clone() else {
            drop(state);
            let connected =
                TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).and_then(|connected| {
                    connected.set_nodelay(true)?;
                    connected.set_nonblocking(true)?;
                    Ok(connected)
                });
            state = link.state.lock().expect("a peer link's lock");
            match connected {
                Ok(connected) => state.stream = Some(Arc::new(connected)),
                Err(_) => {
                    // Unreachable: what is queued now is stale by the time it is back.
                    let dropped = std::mem::take(&mut state.queued_frames);
                    state.queued.clear();
                    state.tail = 0;
                    state.tail_frames = 0;
                    stats.frames_dropped.fetch_add(dropped, Ordering::Relaxed);
                    drop(state);
                    std::thread::sleep(RECONNECT_PAUSE);
                    state = link.state.lock().expect("a peer link's lock");
                }
            }
            continue;
        };
        // One write for what is queued now, so a burst costs one system call.
        let bytes = std::mem::take(&mut state.queued);
        let frames = std::mem::take(&mut state.queued_frames);
        state.tail = 0;
        state.tail_frames = 0;
        state.busy = true;
        drop(state);
        let result = write_all_waiting(&stream, &bytes, stopping);
        state = link.state.lock().expect("a peer link's lock");
        state.busy = false;
        state.last_written = std::time::Instant::now();
        if result.is_ok() {
            stats.frames_sent.fetch_add(frames, Ordering::Relaxed);
        } else {
            stats.frames_dropped.fetch_add(frames, Ordering::Relaxed);
            state.stream = None;
        }
    }
}

/// Whether the peer has closed this connection (or reset it). This side never reads from
/// it, so a close shows only as a readable end of stream; a write to it would still be taken
/// by the kernel and lost (the first write after a peer's restart draws the reset, and only
/// the next one fails). A follower writes to another follower only in an election, so
/// without this check its first vote after that peer restarted went nowhere, and the
/// election waited out a whole timeout.
fn closed_by_peer(stream: &TcpStream) -> bool {
    // The stream is non-blocking.
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use raft::eraftpb::MessageType;

    use super::*;

    const CLUSTER: u64 = 7;

    /// A transport for node 1 of members 1 and 2; node 2's listener stays open and unread.
    fn node_one() -> (Transport, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let peers = [
            PeerAddress {
                node_id: 1,
                address: listener.local_addr().unwrap(),
            },
            PeerAddress {
                node_id: 2,
                address: other.local_addr().unwrap(),
            },
        ];
        (
            Transport::start(CLUSTER, 1, listener, &peers).unwrap(),
            other,
        )
    }

    /// Node 1 (its transport) and node 2 (its transport), on loopback.
    fn pair() -> (Transport, Transport) {
        let (one, two_listener) = node_one();
        let peers = [
            PeerAddress {
                node_id: 1,
                address: one.listen_address(),
            },
            PeerAddress {
                node_id: 2,
                address: two_listener.local_addr().unwrap(),
            },
        ];
        let two = Transport::start(CLUSTER, 2, two_listener, &peers).unwrap();
        (one, two)
    }

    fn heartbeat_from_two(index: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgHeartbeat);
        message.from = 2;
        message.to = 1;
        message.term = 3;
        message.index = index;
        message
    }

    fn frame_from_two(index: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_frame(CLUSTER, &heartbeat_from_two(index), &mut bytes);
        bytes
    }

    /// Waits until node 2's link to node 1 is connected with nothing queued or being
    /// written; the link.
    fn idle_link(two: &Transport) -> Arc<Link> {
        let link = Arc::clone(&two.peers[&1].link);
        for _ in 0..1_000 {
            let state = link.state.lock().unwrap();
            if !state.busy && state.queued.is_empty() && state.stream.is_some() {
                break;
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(1));
        }
        link
    }

    fn indexes(delivered: &[Incoming]) -> Vec<u64> {
        delivered
            .iter()
            .map(|incoming| match incoming {
                Incoming::Message(message) => message.index,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Runs turns of wait and receive (each wait up to `timeout`) until `done` holds; what was
    /// delivered.
    fn turns(
        transport: &mut Transport,
        timeout: Duration,
        max: usize,
        done: impl Fn(&Transport, &[Incoming]) -> bool,
    ) -> Vec<Incoming> {
        let mut delivered = Vec::new();
        for _ in 0..1_000 {
            if done(transport, &delivered) {
                return delivered;
            }
            transport.wait(timeout, || true);
            transport.receive(max, &mut |incoming| delivered.push(incoming));
        }
        panic!("not done after 1,000 turns: {delivered:?}");
    }

    #[test]
    fn frames_split_across_writes_and_frames_left_at_a_turn_s_limit_are_all_delivered_once() {
        let (mut transport, _other) = node_one();
        let mut peer = TcpStream::connect(transport.listen_address()).unwrap();
        let mut bytes = Vec::new();
        for index in 1..=5 {
            bytes.extend(frame_from_two(index));
        }
        // The first frame in two pieces, the rest in one write.
        let first = frame_from_two(1).len();
        peer.write_all(&bytes[..first / 2]).unwrap();
        let _ = turns(&mut transport, Duration::from_millis(10), 2, |t, _| {
            t.connections.iter().any(|c| !c.buffer.is_empty())
        });
        peer.write_all(&bytes[first / 2..]).unwrap();
        // Two messages a turn: the waits after the first turn must not sleep, as whole
        // frames are already read (a wait that slept would take its whole 5 s).
        let started = Instant::now();
        let delivered = turns(&mut transport, Duration::from_secs(5), 2, |_, d| {
            d.len() >= 5
        });
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(indexes(&delivered), [1, 2, 3, 4, 5]);
        assert_eq!(transport.stats.frames_received.load(Ordering::Relaxed), 5);
        assert_eq!(transport.stats.frames_refused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_peer_that_closes_after_half_a_frame_is_let_go_without_a_refusal() {
        let (mut transport, _other) = node_one();
        let mut peer = TcpStream::connect(transport.listen_address()).unwrap();
        let _ = turns(&mut transport, Duration::from_millis(10), 16, |t, _| {
            !t.connections.is_empty()
        });
        let frame = frame_from_two(1);
        peer.write_all(&frame[..frame.len() - 3]).unwrap();
        drop(peer);
        let delivered = turns(&mut transport, Duration::from_millis(10), 16, |t, _| {
            t.connections.is_empty()
        });
        assert!(delivered.is_empty(), "{delivered:?}");
        assert_eq!(transport.stats.frames_refused.load(Ordering::Relaxed), 0);
        // No member's frame came whole, so no member is asked after.
        assert!(transport.probes.is_empty());
    }

    #[test]
    fn a_frame_from_a_stranger_closes_the_connection_and_is_counted() {
        let (mut transport, _other) = node_one();
        let mut peer = TcpStream::connect(transport.listen_address()).unwrap();
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgHeartbeat);
        message.from = 9;
        message.to = 1;
        let mut bytes = Vec::new();
        encode_frame(CLUSTER, &message, &mut bytes);
        peer.write_all(&bytes).unwrap();
        let delivered = turns(&mut transport, Duration::from_millis(10), 16, |t, _| {
            t.stats.frames_refused.load(Ordering::Relaxed) == 1
        });
        assert!(delivered.is_empty(), "{delivered:?}");
        assert!(transport.connections.is_empty());
        let mut byte = [0u8; 1];
        assert_eq!(peer.read(&mut byte).unwrap_or(0), 0, "closed by the node");
    }

    #[test]
    fn frames_leave_in_order_by_the_writer_first_then_from_the_node_s_thread() {
        let (mut one, mut two) = pair();
        // Not yet connected: the writer thread connects and sends these.
        for index in 1..=3 {
            two.send(&heartbeat_from_two(index));
        }
        two.flush();
        let mut delivered = turns(&mut one, Duration::from_millis(10), 16, |_, d| d.len() >= 3);
        let link = idle_link(&two);
        // While the writer writes, nothing may be written around it: these wait in its
        // queue, and it sends them once it is done.
        link.state.lock().unwrap().busy = true;
        two.send(&heartbeat_from_two(4));
        two.send(&heartbeat_from_two(5));
        two.flush();
        assert_eq!(two.stats.frames_sent_directly.load(Ordering::Relaxed), 0);
        assert_eq!(link.state.lock().unwrap().queued_frames, 2);
        link.state.lock().unwrap().busy = false;
        link.work.notify_one();
        delivered.extend(turns(&mut one, Duration::from_millis(10), 16, |_, d| {
            d.len() >= 2
        }));
        idle_link(&two);
        // Connected and idle: the node's thread writes these itself, one write for both.
        two.send(&heartbeat_from_two(6));
        two.send(&heartbeat_from_two(7));
        two.flush();
        assert_eq!(two.stats.frames_sent_directly.load(Ordering::Relaxed), 2);
        let mut rest = turns(&mut one, Duration::from_millis(10), 16, |_, d| d.len() >= 2);
        delivered.append(&mut rest);
        assert_eq!(indexes(&delivered), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(two.stats.frames_sent.load(Ordering::Relaxed), 7);
        assert_eq!(two.stats.frames_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn what_a_socket_does_not_take_at_once_follows_in_order_by_the_writer() {
        let (mut one, mut two) = pair();
        two.send(&heartbeat_from_two(1));
        two.flush();
        let mut delivered = turns(&mut one, Duration::from_millis(10), 16, |_, d| d.len() == 1);
        idle_link(&two);
        // About 20 MB in one step, more than a socket takes while nobody reads: the node's
        // thread writes what it takes, the writer the rest, then the next step's frames.
        const COUNT: u64 = 300_000;
        for index in 2..=COUNT {
            two.send(&heartbeat_from_two(index));
        }
        two.flush();
        assert!(two.stats.frames_sent_directly.load(Ordering::Relaxed) < COUNT - 1);
        two.send(&heartbeat_from_two(COUNT + 1));
        two.flush();
        delivered.extend(turns(&mut one, Duration::from_millis(10), 4_096, |_, d| {
            d.len() as u64 >= COUNT
        }));
        assert!(indexes(&delivered).into_iter().eq(1..=COUNT + 1));
        assert_eq!(one.stats.frames_refused.load(Ordering::Relaxed), 0);
        assert_eq!(two.stats.frames_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn frames_for_a_peer_nobody_listens_for_are_dropped_and_counted() {
        let (mut one, two_listener) = node_one();
        let gone = TcpListener::bind("127.0.0.1:0").unwrap();
        let gone_address = gone.local_addr().unwrap();
        drop(gone);
        let peers = [
            PeerAddress {
                node_id: 1,
                address: gone_address,
            },
            PeerAddress {
                node_id: 2,
                address: two_listener.local_addr().unwrap(),
            },
        ];
        let mut two = Transport::start(CLUSTER, 2, two_listener, &peers).unwrap();
        two.send(&heartbeat_from_two(1));
        two.flush();
        for _ in 0..1_000 {
            if two.stats.frames_dropped.load(Ordering::Relaxed) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(two.stats.frames_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(two.stats.frames_sent.load(Ordering::Relaxed), 0);
        // Node one's own listener saw nothing.
        one.wait(Duration::from_millis(10), || true);
        assert_eq!(one.receive(16, &mut |_| {}), 0);
    }

    #[test]
    fn the_waker_ends_every_wait_from_another_thread() {
        let (mut transport, _other) = node_one();
        let waker = transport.waker();
        // Rung while this thread is awake, the ring writes nothing; what it rang for is
        // found by the question asked after the announcement, and the wait does not sleep.
        waker.wake();
        let started = Instant::now();
        transport.wait(Duration::from_secs(5), || false);
        assert!(started.elapsed() < Duration::from_secs(4));
        let rung = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        const RINGS: u64 = 2_000;
        let ringer = {
            let (rung, seen) = (Arc::clone(&rung), Arc::clone(&seen));
            std::thread::spawn(move || {
                for ring in 1..=RINGS {
                    rung.store(ring, Ordering::SeqCst);
                    waker.wake();
                    while seen.load(Ordering::SeqCst) < ring {
                        std::thread::yield_now();
                    }
                }
            })
        };
        // Each ring lands somewhere around this thread's announcement that it sleeps; one
        // lost between the announcement and the sleep would leave it waiting its whole 5 s.
        let started = Instant::now();
        let mut taken = 0;
        while taken < RINGS {
            transport.wait(Duration::from_secs(5), || {
                rung.load(Ordering::SeqCst) == taken
            });
            taken = rung.load(Ordering::SeqCst);
            seen.store(taken, Ordering::SeqCst);
        }
        assert!(started.elapsed() < Duration::from_secs(4));
        ringer.join().unwrap();
    }
}
