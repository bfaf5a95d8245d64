//! The TCP transport between cluster members: one listener that reads frames from any peer,
//! and one writer thread per peer with a bounded queue. Frames are the versioned framing of
//! [`crate::frame`]; a connection whose bytes are not a valid frame for this node and cluster
//! is closed, and the refusal counted and logged, without harm to the node. Sending never
//! blocks the node's thread: a full queue or a peer that cannot be reached drops the frame,
//! and Raft sends again (appends are retried, heartbeats recur).
//!
//! When a connection from a member ends, its reader asks that member's replication port
//! whether anyone still listens there: a refused connection means the member's process has
//! ended (a process that dies closes its listener with its connections), and the node is
//! told ([`Incoming::PeerGone`]), so that a follower whose leader died need not wait out the
//! election timeout ([`crate::Node::peer_gone`]). A host that goes silent (power loss, a cut
//! cable) refuses nothing: that is found by the election timeout alone. What the transport
//! deliberately does not know: Raft. It reports what it saw and decides nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use raft::eraftpb::Message;

use crate::frame::{decode_frame, encode_frame, Decoded};

/// Frames queued for one peer at most; more are dropped (Raft sends again).
const PEER_QUEUE_FRAMES_MAX: usize = 4_096;
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

/// Counters of the transport, read from any thread.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames handed to a peer's socket.
    pub frames_sent: AtomicU64,
    /// Frames dropped: a full queue or an unreachable peer.
    pub frames_dropped: AtomicU64,
    /// Frames received and handed to the node.
    pub frames_received: AtomicU64,
    /// Connections closed because they sent something that is not a valid frame.
    pub frames_refused: AtomicU64,
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

/// The transport's sending side, owned by the node's thread.
pub struct Transport {
    cluster_id: u64,
    peers: HashMap<u64, Sender<Vec<u8>>>,
    stats: Arc<TransportStats>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    listen_address: SocketAddr,
}

impl Transport {
    /// Starts reading frames on `listener` (handing each message, and each member found
    /// gone, to `deliver`) and one writer per peer.
    pub fn start(
        cluster_id: u64,
        node_id: u64,
        listener: TcpListener,
        peers: &[PeerAddress],
        deliver: Sender<Incoming>,
    ) -> std::io::Result<Transport> {
        let stats = Arc::new(TransportStats::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let listen_address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let mut threads = Vec::new();
        let members: HashMap<u64, SocketAddr> = peers
            .iter()
            .map(|peer| (peer.node_id, peer.address))
            .collect();
        {
            let stats = Arc::clone(&stats);
            let stopping = Arc::clone(&stopping);
            threads.push(
                std::thread::Builder::new()
                    .name("repl-listen".into())
                    .spawn(move || {
                        accept_loop(
                            listener, cluster_id, node_id, members, deliver, stats, stopping,
                        )
                    })?,
            );
        }
        let mut senders = HashMap::new();
        for peer in peers.iter().filter(|peer| peer.node_id != node_id) {
            let (sender, receiver) = bounded(PEER_QUEUE_FRAMES_MAX);
            let stats = Arc::clone(&stats);
            let stopping = Arc::clone(&stopping);
            let address = peer.address;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("repl-to-{}", peer.node_id))
                    .spawn(move || write_loop(address, receiver, stats, stopping))?,
            );
            senders.insert(peer.node_id, sender);
        }
        Ok(Transport {
            cluster_id,
            peers: senders,
            stats,
            stopping,
            threads,
            listen_address,
        })
    }

    /// Queues `message` for its addressee; drops it if the queue is full.
    pub fn send(&self, message: &Message) {
        let Some(queue) = self.peers.get(&message.to) else {
            return;
        };
        let mut bytes = Vec::new();
        encode_frame(self.cluster_id, message, &mut bytes);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = queue.try_send(bytes) {
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.stats)
    }

    /// The address it listens on.
    pub fn listen_address(&self) -> SocketAddr {
        self.listen_address
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.peers.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    cluster_id: u64,
    node_id: u64,
    members: HashMap<u64, SocketAddr>,
    deliver: Sender<Incoming>,
    stats: Arc<TransportStats>,
    stopping: Arc<AtomicBool>,
) {
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    while !stopping.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, from)) => {
                let deliver = deliver.clone();
                let stats = Arc::clone(&stats);
                let stopping = Arc::clone(&stopping);
                let members = members.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name("repl-read".into())
                        .spawn(move || {
                            read_loop(
                                stream, from, cluster_id, node_id, &members, deliver, stats,
                                stopping,
                            )
                        });
                if let Ok(handle) = spawned {
                    readers.push(handle);
                }
                readers.retain(|handle| !handle.is_finished());
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // Closed before the readers are waited for, so that the peers' probes find the port
    // refusing as soon as this node's connections end.
    drop(listener);
    for reader in readers {
        let _ = reader.join();
    }
}

/// Reads one connection; when it ends without a fault of the frames, and it came from a
/// member, tells whether that member's process has ended.
#[allow(clippy::too_many_arguments)]
fn read_loop(
    stream: TcpStream,
    from: SocketAddr,
    cluster_id: u64,
    node_id: u64,
    members: &HashMap<u64, SocketAddr>,
    deliver: Sender<Incoming>,
    stats: Arc<TransportStats>,
    stopping: Arc<AtomicBool>,
) {
    let mut sender = None;
    let ended = read_frames(
        stream,
        from,
        cluster_id,
        node_id,
        members,
        &deliver,
        &stats,
        &stopping,
        &mut sender,
    );
    let (true, Some(member)) = (ended, sender) else {
        return;
    };
    if stopping.load(Ordering::Relaxed) {
        return;
    }
    if refuses_connections(members[&member], &stopping) {
        stats.peers_gone.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            member,
            "replication: node {member}'s connection ended and its replication port refuses \
             connections: its process has ended"
        );
        let _ = deliver.send(Incoming::PeerGone(member));
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

/// Reads frames until the connection ends (true) or is closed for a bad frame or by the
/// node (false); `sender` is the member the frames came from.
#[allow(clippy::too_many_arguments)]
fn read_frames(
    mut stream: TcpStream,
    from: SocketAddr,
    cluster_id: u64,
    node_id: u64,
    members: &HashMap<u64, SocketAddr>,
    deliver: &Sender<Incoming>,
    stats: &TransportStats,
    stopping: &AtomicBool,
    sender: &mut Option<u64>,
) -> bool {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while !stopping.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return true,
        }
        let mut used_total = 0;
        loop {
            match decode_frame(cluster_id, node_id, &buffer[used_total..]) {
                Ok(Decoded::Incomplete(_)) => break,
                Ok(Decoded::Frame {
                    route,
                    message,
                    used,
                }) => {
                    used_total += used;
                    if !members.contains_key(&route.from) || route.from == node_id {
                        refuse(
                            stats,
                            from,
                            &format!("a frame from node {}, not a member", route.from),
                        );
                        return false;
                    }
                    if sender.is_some_and(|member| member != route.from) {
                        refuse(
                            stats,
                            from,
                            &format!(
                                "a frame from node {} on a connection of node {}",
                                route.from,
                                sender.unwrap_or_default()
                            ),
                        );
                        return false;
                    }
                    *sender = Some(route.from);
                    stats.frames_received.fetch_add(1, Ordering::Relaxed);
                    if deliver.send(Incoming::Message(*message)).is_err() {
                        return false;
                    }
                }
                Err(error) => {
                    refuse(stats, from, &error.to_string());
                    return false;
                }
            }
        }
        buffer.drain(..used_total);
    }
    false
}

fn refuse(stats: &TransportStats, from: SocketAddr, reason: &str) {
    stats.frames_refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%from, reason, "replication: closed a connection");
}

fn write_loop(
    address: SocketAddr,
    queue: Receiver<Vec<u8>>,
    stats: Arc<TransportStats>,
    stopping: Arc<AtomicBool>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut last_written = std::time::Instant::now();
    while !stopping.load(Ordering::Relaxed) {
        let Ok(first) = queue.recv_timeout(Duration::from_millis(100)) else {
            if queue.is_empty() && stopping.load(Ordering::Relaxed) {
                return;
            }
            continue;
        };
        if stream.as_ref().is_some_and(|connection| {
            last_written.elapsed() >= IDLE_CHECK_AFTER && closed_by_peer(connection)
        }) {
            stream = None;
        }
        if stream.is_none() {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(connected) => {
                    let _ = connected.set_nodelay(true);
                    let _ = connected.set_write_timeout(Some(Duration::from_secs(1)));
                    stream = Some(connected);
                }
                Err(_) => {
                    // Unreachable: what is queued now is stale by the time it is back.
                    let dropped = 1 + queue.try_iter().count() as u64;
                    stats.frames_dropped.fetch_add(dropped, Ordering::Relaxed);
                    std::thread::sleep(RECONNECT_PAUSE);
                    continue;
                }
            }
        }
        // One write for what is queued now, so a burst of appends costs one system call.
        let mut batch = first;
        let mut frames = 1u64;
        while batch.len() < 1 << 20 {
            match queue.try_recv() {
                Ok(more) => {
                    batch.extend_from_slice(&more);
                    frames += 1;
                }
                Err(_) => break,
            }
        }
        let connection = stream.as_mut().expect("connected above");
        if connection.write_all(&batch).is_ok() {
            stats.frames_sent.fetch_add(frames, Ordering::Relaxed);
        } else {
            stats.frames_dropped.fetch_add(frames, Ordering::Relaxed);
            stream = None;
        }
        last_written = std::time::Instant::now();
    }
}

/// Whether the peer has closed this connection (or reset it). This side never reads from
/// it, so a close shows only as a readable end of stream; a write to it would still be taken
/// by the kernel and lost (the first write after a peer's restart draws the reset, and only
/// the next one fails). A follower writes to another follower only in an election, so
/// without this check its first vote after that peer restarted went nowhere, and the
/// election waited out a whole timeout.
fn closed_by_peer(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).is_err() || closed
}
