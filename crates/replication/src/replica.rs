//! The production driver of a [`Node`]: one thread that owns it, ticks it on a timer, hands
//! it what the [`Transport`] receives (read on this same thread) and what the leader's
//! pipeline proposes, runs [`Node::process`] and publishes the node's status, so that other
//! threads can wait for a sequence to be committed ([`Replica::wait_committed`]). It sleeps
//! in the transport's [`Transport::wait`], which a frame from a peer, a proposal or an order
//! ends.
//!
//! A proposal carries the sequence the ring gave the command; the node must put it at that
//! very index. If it cannot (this node no longer leads, or the indexes disagree), the replica
//! records why, and every waiter is told: the leader's pipeline then stops acknowledging.

use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use ringmatch_journal::JournalRecord;

use crate::hard_state::HardStatePort;
use crate::log::LogPort;
use crate::node::{Committed, Node, NodeStatus, Outbox, Role};
use crate::transport::{Incoming, PeerAddress, Transport, TransportStats, Waker};
use crate::ReplicationError;

/// Messages taken from the network per turn of the loop at most, so a flood cannot starve
/// the timer.
const MESSAGES_PER_TURN_MAX: usize = 4_096;

/// What a replica is told to do.
enum Control {
    Propose(Vec<JournalRecord>),
    /// Move the log start to this index, dropping journal segments before it (to `archive`
    /// when given).
    Compact(u64, Option<std::path::PathBuf>),
    Stop,
}

/// The replica's orders, and the wake-up of its thread that each one rings.
#[derive(Clone)]
struct Orders {
    sender: Sender<Control>,
    waker: Waker,
}

impl Orders {
    fn send(&self, order: Control) -> Result<(), ()> {
        let sent = self.sender.send(order).map_err(|_| ());
        self.waker.wake();
        sent
    }
}

/// A handle that asks the replica to compact its log once a snapshot is stored (see
/// [`Node::compact`]); cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Compactor {
    control: Orders,
}

impl Compactor {
    /// Asks for the log to start after `index`; journal segments before it are removed, or
    /// moved to `archive`.
    pub fn compact(&self, index: u64, archive: Option<std::path::PathBuf>) {
        let _ = self.control.send(Control::Compact(index, archive));
    }
}

/// What the node's thread publishes.
#[derive(Debug, Clone)]
struct Published {
    status: NodeStatus,
    /// Why the node stopped, or why a proposal could not be placed.
    failure: Option<String>,
    stopped: bool,
    /// Threads waiting on `Shared::changed` now: with none, a publish wakes nobody (a wake
    /// of an empty condition variable is still a system call, one per step on a follower).
    waiting: usize,
}

impl Published {
    /// What [`Shared::role_changed`] announces: the part, the term, the leader, and whether
    /// the node failed or stopped.
    fn role_key(&self) -> (Role, u64, u64, bool, bool) {
        (
            self.status.role,
            self.status.term,
            self.status.leader_id,
            self.failure.is_some(),
            self.stopped,
        )
    }
}

struct Shared {
    state: Mutex<Published>,
    /// Every publish, while somebody waits on it.
    changed: Condvar,
    /// Only a change of part, term or leader, a failure or the stop: what a follower waiting
    /// to lead, or a leader watching for its deposal, waits on, without a wake-up per
    /// commit.
    role_changed: Condvar,
}

/// Called on the node's thread with the status, the index of a leader's snapshot the node
/// installed (its matcher must restore it; entries below it come before it, the others
/// after), and every committed entry, in order.
pub type CommitHook = Box<dyn FnMut(&NodeStatus, Option<u64>, &[Committed]) + Send>;

/// Why [`Replica::wait_committed`] returned without the sequence committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// This node stopped leading, or never led, in the term the wait was for.
    #[error(
        "this node no longer leads term {term} (now {role} in term {now_term}, leader {leader_id})"
    )]
    Deposed {
        /// The term the wait was for.
        term: u64,
        /// The node's role now.
        role: &'static str,
        /// The term now.
        now_term: u64,
        /// The leader it knows of now (0: none).
        leader_id: u64,
    },
    /// The replica failed or stopped.
    #[error("the replica stopped: {0}")]
    Stopped(String),
    /// The time ran out.
    #[error("not committed within {0:?}")]
    Timeout(Duration),
}

/// A running replica: the node's thread and its transport.
pub struct Replica {
    control: Orders,
    shared: Arc<Shared>,
    transport_stats: Arc<TransportStats>,
    thread: Option<JoinHandle<()>>,
}

impl Replica {
    /// Starts the node's thread over `node`, reading frames on `listener` and sending to
    /// `peers`, ticking every `tick`; `on_commit` sees every committed entry.
    pub fn start<L: LogPort, H: HardStatePort>(
        node: Node<L, H>,
        cluster_id: u64,
        listener: TcpListener,
        peers: &[PeerAddress],
        tick: Duration,
        on_commit: CommitHook,
    ) -> Result<Replica, ReplicationError> {
        let status = node.status();
        let transport =
            Transport::start(cluster_id, status.node_id, listener, peers).map_err(|source| {
                ReplicationError::Io {
                    path: "replication listener".into(),
                    source,
                }
            })?;
        let transport_stats = transport.stats();
        let waker = transport.waker();
        let shared = Arc::new(Shared {
            state: Mutex::new(Published {
                status,
                failure: None,
                stopped: false,
                waiting: 0,
            }),
            changed: Condvar::new(),
            role_changed: Condvar::new(),
        });
        let (control, control_receiver) = unbounded();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("replica".into())
                .spawn(move || run(node, transport, control_receiver, &shared, tick, on_commit))
                .map_err(|source| ReplicationError::Io {
                    path: "replica thread".into(),
                    source,
                })?
        };
        Ok(Replica {
            control: Orders {
                sender: control,
                waker,
            },
            shared,
            transport_stats,
            thread: Some(thread),
        })
    }

    /// A handle to ask for compactions.
    pub fn compactor(&self) -> Compactor {
        Compactor {
            control: self.control.clone(),
        }
    }

    /// Hands the node commands to sequence, each at its record's `seq`.
    pub fn propose(&self, records: Vec<JournalRecord>) -> Result<(), ReplicationError> {
        self.control
            .send(Control::Propose(records))
            .map_err(|()| ReplicationError::Refused("the replica has stopped".into()))
    }

    /// Waits until `seq` is committed while this node leads `term`; the commit index then
    /// (at least `seq`).
    pub fn wait_committed(&self, seq: u64, term: u64, timeout: Duration) -> Result<u64, WaitError> {
        self.wait(timeout, |state| {
            if let Some(failure) = &state.failure {
                return Some(Err(WaitError::Stopped(failure.clone())));
            }
            let status = &state.status;
            if status.role != Role::Leader || status.term != term {
                return Some(Err(WaitError::Deposed {
                    term,
                    role: status.role.name(),
                    now_term: status.term,
                    leader_id: status.leader_id,
                }));
            }
            if status.commit >= seq {
                return Some(Ok(status.commit));
            }
            state
                .stopped
                .then(|| Err(WaitError::Stopped("stopped".into())))
        })
    }

    /// Waits until `accept` holds for the status, or the time runs out; the status then.
    pub fn wait_for(
        &self,
        timeout: Duration,
        accept: impl Fn(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, WaitError> {
        self.wait(timeout, |state| status_wait(state, &accept))
    }

    /// Like [`Replica::wait_for`], woken only when the node's part, term or leader changes,
    /// or it fails or stops: a wait that many commits would otherwise wake for nothing.
    /// `accept` may look at the rest of the status, but a change of only that does not end
    /// the wait before the time runs out.
    pub fn wait_for_role(
        &self,
        timeout: Duration,
        accept: impl Fn(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, WaitError> {
        self.wait_on(&self.shared.role_changed, false, timeout, |state| {
            status_wait(state, &accept)
        })
    }

    /// Waits, each time the node publishes, until `decide` gives an answer or the time runs
    /// out.
    fn wait<T>(
        &self,
        timeout: Duration,
        decide: impl Fn(&Published) -> Option<Result<T, WaitError>>,
    ) -> Result<T, WaitError> {
        self.wait_on(&self.shared.changed, true, timeout, decide)
    }

    /// Waits on `condition` (counted among `Published::waiting` when `counted`) until
    /// `decide` gives an answer or the time runs out.
    fn wait_on<T>(
        &self,
        condition: &Condvar,
        counted: bool,
        timeout: Duration,
        decide: impl Fn(&Published) -> Option<Result<T, WaitError>>,
    ) -> Result<T, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().expect("the replica's lock");
        loop {
            if let Some(answer) = decide(&state) {
                return answer;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout(timeout));
            }
            // Counted while the lock is held, so a publish either comes before this check
            // (and `decide` saw it) or sees the count and wakes this thread.
            state.waiting += usize::from(counted);
            state = condition
                .wait_timeout(state, deadline - now)
                .expect("the replica's lock")
                .0;
            state.waiting -= usize::from(counted);
        }
    }

    /// The node's status as last published.
    pub fn status(&self) -> NodeStatus {
        self.shared
            .state
            .lock()
            .expect("the replica's lock")
            .status
            .clone()
    }

    /// Why the replica failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .expect("the replica's lock")
            .failure
            .clone()
    }

    /// The transport's counters.
    pub fn transport_stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.transport_stats)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer of a wait for `accept` to hold: the status once it does; the failure, or the
/// stop, once there is one.
fn status_wait(
    state: &Published,
    accept: &impl Fn(&NodeStatus) -> bool,
) -> Option<Result<NodeStatus, WaitError>> {
    if accept(&state.status) {
        return Some(Ok(state.status.clone()));
    }
    if let Some(failure) = &state.failure {
        return Some(Err(WaitError::Stopped(failure.clone())));
    }
    state
        .stopped
        .then(|| Err(WaitError::Stopped("stopped".into())))
}

fn publish(shared: &Shared, status: NodeStatus, failure: Option<String>, stopped: bool) {
    let mut state = shared.state.lock().expect("the replica's lock");
    let role_before = state.role_key();
    state.status = status;
    if state.failure.is_none() {
        state.failure = failure;
    }
    state.stopped |= stopped;
    let role_changed = state.role_key() != role_before;
    let anybody_waiting = state.waiting > 0;
    drop(state);
    if anybody_waiting {
        shared.changed.notify_all();
    }
    if role_changed {
        shared.role_changed.notify_all();
    }
}

fn run<L: LogPort, H: HardStatePort>(
    mut node: Node<L, H>,
    mut transport: Transport,
    control: Receiver<Control>,
    shared: &Shared,
    tick: Duration,
    mut on_commit: CommitHook,
) {
    let mut next_tick = Instant::now() + tick;
    let mut early_elections = node.early_elections_count();
    let mut failure: Option<String> = None;
    let mut stopping = false;
    let mut published: Option<NodeStatus> = None;
    while !stopping && failure.is_none() {
        let wait = next_tick.saturating_duration_since(Instant::now());
        transport.wait(wait, || control.is_empty());
        transport.receive(MESSAGES_PER_TURN_MAX, &mut |incoming| match incoming {
            Incoming::Message(message) => {
                let from = message.from;
                if let Err(error) = node.step(message) {
                    tracing::warn!(from, "replication: refused a message: {error}");
                }
            }
            Incoming::PeerGone(member) => node.peer_gone(member),
        });
        let mut proposals = Vec::new();
        let mut compactions = Vec::new();
        for order in control.try_iter() {
            match order {
                Control::Propose(records) => proposals.push(records),
                Control::Compact(index, archive) => compactions.push((index, archive)),
                Control::Stop => stopping = true,
            }
        }
        for (index, archive) in compactions.drain(..) {
            if let Err(error) = node.compact(index, archive.as_deref()) {
                failure = Some(format!("compaction to {index} failed: {error}"));
            }
        }
        for batch in proposals {
            let Some(first) = batch.first().map(|record| record.seq) else {
                continue;
            };
            let commands: Vec<(u64, ringmatch_proto::Command)> = batch
                .iter()
                .map(|record| (record.timestamp_ns, record.command))
                .collect();
            match node.propose_all(&commands) {
                Ok(index) if index == first => {}
                Ok(index) => {
                    failure = Some(format!(
                        "sequence {first} was proposed at index {index}: the ring and the log \
                         disagree"
                    ));
                    break;
                }
                Err(error) => {
                    // No longer the leader: its waiters learn it from the status (role and
                    // term), and the commands are never acknowledged.
                    tracing::warn!(first, "replication: sequences not proposed: {error}");
                    break;
                }
            }
        }
        let now = Instant::now();
        if now >= next_tick {
            node.tick();
            next_tick += tick;
            if next_tick < now {
                next_tick = now + tick;
            }
        }
        if node.early_elections_count() != early_elections {
            early_elections = node.early_elections_count();
            tracing::info!(
                term = node.term(),
                "cluster: the leader's process has ended; standing for election without \
                 waiting out the election timeout"
            );
        }
        match node.process(&mut transport) {
            Ok(committed) => {
                let status = node.status();
                let installed = node.take_installed_snapshot();
                if installed.is_some() || !committed.is_empty() {
                    on_commit(&status, installed, &committed);
                }
                // Waiters are woken only by a change (a wake-up of each on every turn cost
                // a system call and their threads' turns).
                if failure.is_some() || published.as_ref() != Some(&status) {
                    publish(shared, status.clone(), failure.clone(), false);
                    published = Some(status);
                }
            }
            Err(error) => {
                failure = Some(format!("the node failed: {error}"));
                publish(shared, node.status(), failure.clone(), false);
            }
        }
    }
    publish(shared, node.status(), failure, true);
}

impl Outbox for Transport {
    fn send(&mut self, message: raft::eraftpb::Message) {
        Transport::send(self, &message);
    }

    fn flush(&mut self) {
        Transport::flush(self);
    }
}
