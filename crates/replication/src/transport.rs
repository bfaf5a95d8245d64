//! The TCP transport between cluster members: one listener that reads frames from any peer,
//! and one writer thread per peer with a bounded queue. Frames are the versioned framing of
//! [`crate::frame`]; a connection whose bytes are not a valid frame for this node and cluster
//! is closed, and the refusal counted and logged, without harm to the node. Sending never
//! blocks the node's thread: a full queue or a peer that cannot be reached drops the frame,
//! and Raft sends again (appends are retried, heartbeats recur).

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
    /// Starts reading frames on `listener` (handing each message to `deliver`) and one writer
    /// per peer.
    pub fn start(
        cluster_id: u64,
        node_id: u64,
        listener: TcpListener,
        peers: &[PeerAddress],
        deliver: Sender<Message>,
    ) -> std::io::Result<Transport> {
        let stats = Arc::new(TransportStats::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let listen_address = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let mut threads = Vec::new();
        let member_ids: Vec<u64> = peers.iter().map(|peer| peer.node_id).collect();
        {
            let stats = Arc::clone(&stats);
            let stopping = Arc::clone(&stopping);
            threads.push(
                std::thread::Builder::new()
                    .name("repl-listen".into())
                    .spawn(move || {
                        accept_loop(
                            listener, cluster_id, node_id, member_ids, deliver, stats, stopping,
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
    members: Vec<u64>,
    deliver: Sender<Message>,
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
    for reader in readers {
        let _ = reader.join();
    }
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    mut stream: TcpStream,
    from: SocketAddr,
    cluster_id: u64,
    node_id: u64,
    members: &[u64],
    deliver: Sender<Message>,
    stats: Arc<TransportStats>,
    stopping: Arc<AtomicBool>,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while !stopping.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
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
                    if !members.contains(&route.from) || route.from == node_id {
                        refuse(
                            &stats,
                            from,
                            &format!("a frame from node {}, not a member", route.from),
                        );
                        return;
                    }
                    stats.frames_received.fetch_add(1, Ordering::Relaxed);
                    if deliver.send(*message).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    refuse(&stats, from, &error.to_string());
                    return;
                }
            }
        }
        buffer.drain(..used_total);
    }
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
    while !stopping.load(Ordering::Relaxed) {
        let Ok(first) = queue.recv_timeout(Duration::from_millis(100)) else {
            if queue.is_empty() && stopping.load(Ordering::Relaxed) {
                return;
            }
            continue;
        };
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
    }
}
