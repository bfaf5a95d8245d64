//! One cluster node: the raft-rs `RawNode` over the journal ([`LogStore`]), stepped by its
//! driver. The node reads no clock and does no network I/O: the driver calls
//! [`Node::tick`] on its timer, hands it the messages that arrive ([`Node::step`]) and the
//! commands to sequence ([`Node::propose`]), and [`Node::process`] gives back the messages
//! to send and the committed records to run. The production driver is a thread with a TCP
//! transport; the simulator (`crates/sim`) drives the same struct over a simulated network.
//!
//! What [`Node::process`] does with one Raft `Ready`, in this order:
//! 1. stores the hard state when the term or the vote changed (synced);
//! 2. hands the leader's append messages to the outbox *before* its own journal write, so the
//!    followers write and sync in parallel with the leader;
//! 3. appends the new entries to the journal (cutting an overridden uncommitted tail) and
//!    syncs it;
//! 4. hands the messages that had to wait for that sync (votes, append acks) to the outbox;
//! 5. returns the committed entries as journal records: only those may be matched, so an
//!    acknowledgement means "on a majority of disks", the leader's own copy counting once it
//!    is synced.

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{Config, RawNode, StateRole};
use ringmatch_journal::JournalRecord;
use ringmatch_proto::{Command, CommandType};

use crate::hard_state::HardStatePort;
use crate::log::{entry_data, record_of, LogPort, LogStore, SnapshotPort};
use crate::ReplicationError;

/// How a node takes part in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The cluster's id: frames of another cluster are refused.
    pub cluster_id: u64,
    /// This node's id (not 0).
    pub node_id: u64,
    /// The voting members, this node among them unless it is a learner.
    pub voters: Vec<u64>,
    /// Non-voting members: they receive the log but never count toward a majority.
    pub learners: Vec<u64>,
    /// Ticks without a leader's message before a follower stands for election.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// Whether each election timeout is drawn at random from `election_ticks` to twice that
    /// (raft-rs's own draw, which avoids split votes). The simulator turns it off and gives
    /// each node its own fixed timeout instead, so a seed replays exactly.
    pub randomized_election: bool,
    /// How far the commit index moves before it is stored without a term or vote change
    /// ([`crate::log::COMMIT_STORED_EVERY`] in service; the simulator draws small values).
    pub commit_stored_every: u64,
}

impl NodeConfig {
    /// Every member's id, voters first.
    pub fn members(&self) -> impl Iterator<Item = u64> + '_ {
        self.voters.iter().chain(&self.learners).copied()
    }

    /// Checks the configuration; the error says what is wrong.
    pub fn validate(&self) -> Result<(), ReplicationError> {
        let bad = |reason: String| Err(ReplicationError::Config(reason));
        if self.node_id == 0 {
            return bad("node id 0 is reserved (it means \"none\" to Raft)".into());
        }
        let mut ids: Vec<u64> = self.members().collect();
        ids.sort_unstable();
        if ids.windows(2).any(|pair| pair[0] == pair[1]) || ids.contains(&0) {
            return bad(format!("member ids must be distinct and not 0: {ids:?}"));
        }
        if !ids.contains(&self.node_id) {
            return bad(format!(
                "node {} is not among the members {ids:?}",
                self.node_id
            ));
        }
        if self.voters.is_empty() {
            return bad("a cluster needs at least one voter".into());
        }
        if self.commit_stored_every == 0 {
            return bad("commit_stored_every must be at least 1".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return bad(format!(
                "the election timeout ({} ticks) must be longer than the heartbeat interval \
                 ({} ticks, at least 1)",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        Ok(())
    }
}

/// A node's part at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sequences commands; its committed entries are acknowledged.
    Leader,
    /// Journals the leader's entries and runs the committed ones in shadow.
    Follower,
    /// Standing for election.
    Candidate,
    /// Asking whether it could win an election, before disturbing the cluster (pre-vote).
    PreCandidate,
    /// A non-voting member.
    Learner,
}

impl Role {
    /// The name in `/status` and the logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre_candidate",
            Role::Learner => "learner",
        }
    }
}

/// A member's replication progress, as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberProgress {
    /// The member.
    pub node_id: u64,
    /// The highest index known to be in its journal.
    pub matched: u64,
}

/// Where a node's messages go ([`Node::process`]). A closure taking each message is one;
/// the transport gathers messages and sends them when flushed.
pub trait Outbox {
    /// Takes a message to send.
    fn send(&mut self, message: Message);
    /// Sends what was taken. Called before the node writes and syncs its journal (so that a
    /// leader's appends are on their way meanwhile) and before `process` returns.
    fn flush(&mut self) {}
}

impl<F: FnMut(Message)> Outbox for F {
    fn send(&mut self, message: Message) {
        self(message);
    }
}

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// Its part.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader it knows of (0: none).
    pub leader_id: u64,
    /// The highest index known committed.
    pub commit: u64,
    /// The last index in its journal.
    pub last_index: u64,
    /// On the leader, every other member's progress; empty elsewhere.
    pub members: Vec<MemberProgress>,
    /// Elections this node stood in at once on word that its leader's process had ended
    /// ([`Node::peer_gone`]), since it started.
    pub early_elections: u64,
}

/// A committed entry, as the journal holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The record (its `seq` is the entry's index).
    pub record: JournalRecord,
    /// The entry's term.
    pub term: u64,
}

/// A leader this follower was told has ended ([`Node::peer_gone`]), while no other leader is
/// known.
#[derive(Debug, Clone, Copy)]
struct GoneLeader {
    id: u64,
    /// Ticks since the word came.
    ticks: usize,
    /// Ticks this node waits before it stands (its rank among the other voters times half
    /// an election timeout).
    wait_ticks: usize,
}

/// The node.
pub struct Node<L: LogPort, H: HardStatePort> {
    raw: RawNode<LogStore<L, H>>,
    config: NodeConfig,
    applied: u64,
    /// The index of a leader's snapshot installed since the driver last asked.
    installed: Option<u64>,
    gone_leader: Option<GoneLeader>,
    /// Elections this node stood in at once on word that its leader had ended.
    early_elections_count: u64,
}

impl<L: LogPort, H: HardStatePort> Node<L, H> {
    /// Opens the node over its journal and hard state. `applied` is the last index whose
    /// command the caller's matcher has already run (recovered from a snapshot and replay);
    /// it must not pass the stored commit index. Committed entries after it come out of
    /// [`Node::process`].
    pub fn open(
        config: &NodeConfig,
        log: L,
        hard_state: H,
        snapshots: Option<Box<dyn SnapshotPort>>,
        applied: u64,
    ) -> Result<Node<L, H>, ReplicationError> {
        config.validate()?;
        let conf_state = ConfState {
            voters: config.voters.clone(),
            learners: config.learners.clone(),
            ..ConfState::default()
        };
        let store = LogStore::open(
            log,
            hard_state,
            conf_state,
            config.commit_stored_every,
            snapshots,
        )?;
        let commit = store.hard_state().commit;
        if applied > commit {
            return Err(ReplicationError::BadLog(format!(
                "the matcher has run up to sequence {applied}, past the stored commit index \
                 {commit}"
            )));
        }
        let applied = applied.max(store.hard_state().log_start);
        let (min_election_tick, max_election_tick) = if config.randomized_election {
            (config.election_ticks, 2 * config.election_ticks)
        } else {
            (config.election_ticks, config.election_ticks + 1)
        };
        let raft_config = Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            min_election_tick,
            max_election_tick,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // Off: with raft-rs 0.7's batch_append (pending appends to one follower merged
            // into one message) the cluster simulator finds followers told to commit past
            // their log and raft-rs panicking ("to_commit N is out of range", "unstable.slice
            // out of bound") in most seeds. A ring batch is one proposal anyway
            // (`propose_all`), so its commands already travel in one append.
            batch_append: false,
            // A leader that hears from no majority for an election timeout steps down, so a
            // leader cut off from the cluster stops acknowledging.
            check_quorum: true,
            // A node that rejoins after a partition does not depose a working leader.
            pre_vote: true,
            // A follower learns a new commit index from the next append or heartbeat, not
            // from an empty append sent to every follower each time the index moves: that
            // halved the frames from the leader, and the followers' commit index is only
            // what their shadow matcher may run (a new leader commits its own entry first).
            skip_bcast_commit: true,
            ..Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, store, &logger).map_err(ReplicationError::Raft)?;
        Ok(Node {
            raw,
            config: config.clone(),
            applied,
            installed: None,
            gone_leader: None,
            early_elections_count: 0,
        })
    }

    /// One tick of the node's timer.
    pub fn tick(&mut self) {
        self.raw.tick();
        if let Some(gone) = &mut self.gone_leader {
            gone.ticks += 1;
        }
        self.stand_if_leader_gone();
    }

    /// The driver's word that member `id`'s process has ended (the transport saw its
    /// connection end and its port refuse connections: [`crate::Incoming::PeerGone`]). If
    /// `id` is this follower's leader, the follower need not wait out the election timeout:
    /// the voter with the lowest id among the others stands for election at once, the next
    /// one half an election timeout later if no leader has come by then, and so on. They stand
    /// as a leader's chosen successor does (raft-rs `MsgTimeoutNow`, handed to the node on
    /// the dead leader's behalf): no pre-vote, and the others grant the vote although they
    /// heard from the leader within the timeout. Raft's safety does not rest on the word
    /// being true: a vote still needs a log at least as up to date as the voter's, and a
    /// false word costs an election, no more. Word about anyone else, or on a node that is not
    /// a voting follower of that leader, is ignored.
    pub fn peer_gone(&mut self, id: u64) {
        let raft = &self.raw.raft;
        if raft.state != StateRole::Follower
            || !raft.promotable()
            || raft.leader_id != id
            || id == self.config.node_id
        {
            return;
        }
        let mut others: Vec<u64> = self
            .config
            .voters
            .iter()
            .copied()
            .filter(|&voter| voter != id)
            .collect();
        others.sort_unstable();
        let rank = others
            .iter()
            .position(|&voter| voter == self.config.node_id)
            .unwrap_or(0);
        self.gone_leader = Some(GoneLeader {
            id,
            ticks: 0,
            wait_ticks: rank * self.config.election_ticks.div_ceil(2),
        });
        self.stand_if_leader_gone();
    }

    /// Stands for election once this node's wait after word of its leader's end is over,
    /// unless a leader has come meanwhile; once per word.
    fn stand_if_leader_gone(&mut self) {
        let Some(gone) = self.gone_leader else {
            return;
        };
        let raft = &self.raw.raft;
        let other_leader = raft.leader_id != 0 && raft.leader_id != gone.id;
        if other_leader || raft.state == StateRole::Leader {
            self.gone_leader = None;
            return;
        }
        if gone.ticks < gone.wait_ticks || raft.state != StateRole::Follower {
            return;
        }
        let mut timeout_now = Message::default();
        timeout_now.set_msg_type(MessageType::MsgTimeoutNow);
        timeout_now.from = gone.id;
        timeout_now.to = self.config.node_id;
        timeout_now.term = raft.term;
        if self.raw.step(timeout_now).is_ok() {
            self.early_elections_count += 1;
        }
        self.gone_leader = None;
    }

    /// Elections this node stood in at once on word that its leader had ended
    /// ([`Node::peer_gone`]).
    pub fn early_elections_count(&self) -> u64 {
        self.early_elections_count
    }

    /// Hands the node a message from a member. Refused: a message from a node that is not
    /// another member or for another node; one without a term; a local message type, and a
    /// proposal or read request (commands enter only through the leader's own pipeline). One
    /// of an old term is taken and ignored by Raft.
    pub fn step(&mut self, message: Message) -> Result<(), ReplicationError> {
        if message.to != self.config.node_id {
            return Err(ReplicationError::Refused(format!(
                "a message for node {}, and this is node {}",
                message.to, self.config.node_id
            )));
        }
        if message.from == self.config.node_id
            || !self.config.members().any(|id| id == message.from)
        {
            return Err(ReplicationError::Refused(format!(
                "a message from node {}, which is not another member",
                message.from
            )));
        }
        if message.term == 0 {
            // Raft reads term 0 as "local, of the current term": from the network it would
            // let any sender's append pass as the leader's.
            return Err(ReplicationError::Refused(format!(
                "a {:?} without a term",
                message.get_msg_type()
            )));
        }
        let message_type = message.get_msg_type();
        if raft::raw_node::is_local_msg(message_type)
            || matches!(
                message_type,
                MessageType::MsgPropose
                    | MessageType::MsgReadIndex
                    | MessageType::MsgReadIndexResp
                    // No member transfers leadership: a transfer would make the leader drop
                    // proposals while it still leads.
                    | MessageType::MsgTransferLeader
                    | MessageType::MsgTimeoutNow
            )
        {
            return Err(ReplicationError::Refused(format!(
                "a {:?} from the network, where members never send one",
                message_type
            )));
        }
        match self.raw.step(message) {
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(error) => Err(ReplicationError::Raft(error)),
        }
    }

    /// Sequences one command, when this node is the leader: the index it will have (the
    /// sequence it is journaled and matched under once committed).
    pub fn propose(
        &mut self,
        timestamp_ns: u64,
        command: &Command,
    ) -> Result<u64, ReplicationError> {
        self.propose_all(&[(timestamp_ns, *command)])
    }

    /// Sequences several commands at once, in order, when this node is the leader: one Raft
    /// proposal for all of them (one append message per follower, not one per command). The
    /// index of the first; the others follow it.
    pub fn propose_all(&mut self, commands: &[(u64, Command)]) -> Result<u64, ReplicationError> {
        if commands
            .iter()
            .any(|(_, command)| command.command_type == CommandType::Term)
        {
            return Err(ReplicationError::Refused(
                "a term record is never proposed".into(),
            ));
        }
        if self.raw.raft.state != StateRole::Leader {
            return Err(ReplicationError::NotLeader {
                leader_id: self.raw.raft.leader_id,
            });
        }
        let first = self.raw.raft.raft_log.last_index() + 1;
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.config.node_id;
        message.entries = commands
            .iter()
            .map(|(timestamp_ns, command)| raft::eraftpb::Entry {
                data: entry_data(*timestamp_ns, command).into(),
                ..raft::eraftpb::Entry::default()
            })
            .collect::<Vec<_>>()
            .into();
        match self.raw.raft.step(message) {
            Ok(()) => Ok(first),
            Err(raft::Error::ProposalDropped) => Err(ReplicationError::NotLeader {
                leader_id: self.raw.raft.leader_id,
            }),
            Err(error) => Err(ReplicationError::Raft(error)),
        }
    }

    /// Handles everything Raft has ready (see the module docs), handing messages to
    /// `outbox` as they may leave, and flushing it before each wait for the journal and at
    /// the end; returns the committed records to run, in order.
    pub fn process(&mut self, outbox: &mut dyn Outbox) -> Result<Vec<Committed>, ReplicationError> {
        let mut committed = Vec::new();
        // Followers sent a snapshot: raft-rs waits for word of it before it sends them
        // anything else, and a lost message would leave them behind for good. It is told
        // the snapshot went out; a follower that did not get it rejects the next append,
        // and is sent one again.
        let snapshot_sent_to = std::cell::RefCell::new(Vec::new());
        let send = |outbox: &mut dyn Outbox, message: Message| {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                snapshot_sent_to.borrow_mut().push(message.to);
            }
            outbox.send(message);
        };
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            // A new term or vote is stored before any message of this Ready leaves and before
            // its entries are journaled: a crash then never leaves a term record in the
            // journal (or at a learner) of a term this node has forgotten.
            let hard_state = ready.hs().cloned();
            if let Some(hard_state) = &hard_state {
                self.raw
                    .mut_store()
                    .set_term_and_vote(hard_state.term, hard_state.vote)?;
            }
            for message in ready.take_messages() {
                send(outbox, message);
            }
            // A leader's appends leave before its own journal write and sync.
            outbox.flush();
            if !ready.snapshot().is_empty() {
                // Stored (file, hard state, journal reset) before the acks of this Ready
                // leave; the matcher jumps to it, and committed entries continue after it.
                let snapshot = ready.snapshot();
                let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
                self.raw
                    .mut_store()
                    .install_snapshot(index, term, &snapshot.data)?;
                self.applied = index;
                self.installed = Some(index);
            }
            self.take_committed(ready.take_committed_entries(), &mut committed)?;
            if !ready.entries().is_empty() {
                let store = self.raw.mut_store();
                store.append(ready.entries())?;
                store.sync()?;
            }
            if let Some(hard_state) = &hard_state {
                self.raw.mut_store().set_commit(hard_state.commit)?;
            }
            for message in ready.take_persisted_messages() {
                send(outbox, message);
            }
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(commit)?;
            }
            for message in light.take_messages() {
                send(outbox, message);
            }
            self.take_committed(light.take_committed_entries(), &mut committed)?;
            self.raw.advance_apply_to(self.applied);
            let sent_to: Vec<u64> = snapshot_sent_to.borrow_mut().drain(..).collect();
            for to in sent_to {
                self.raw.report_snapshot(to, raft::SnapshotStatus::Finish);
            }
        }
        outbox.flush();
        Ok(committed)
    }

    fn take_committed(
        &mut self,
        entries: Vec<raft::eraftpb::Entry>,
        out: &mut Vec<Committed>,
    ) -> Result<(), ReplicationError> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            if entry.index != self.applied + 1 {
                return Err(ReplicationError::BadLog(format!(
                    "committed entry {} after applied {}",
                    entry.index, self.applied
                )));
            }
            out.push(Committed {
                record: record_of(&entry)?,
                term: entry.term,
            });
            self.applied = entry.index;
        }
        Ok(())
    }

    /// The index of the leader's snapshot this node installed since the last call, if any:
    /// the caller's matcher must restore it, and then run the committed entries after it
    /// (those [`Node::process`] returned with a lower index come before it).
    pub fn take_installed_snapshot(&mut self) -> Option<u64> {
        self.installed.take()
    }

    /// Moves the log start to `index` (a stored snapshot of the state after it, committed)
    /// and drops the journal's segments before it; see [`LogStore::compact`].
    pub fn compact(
        &mut self,
        index: u64,
        archive: Option<&std::path::Path>,
    ) -> Result<(), ReplicationError> {
        let index = index.min(self.applied);
        self.raw.mut_store().compact(index, archive)
    }

    /// The first index of the Raft log.
    pub fn first_index(&self) -> u64 {
        self.raw.store().first_index()
    }

    /// This node's part at the moment.
    pub fn role(&self) -> Role {
        if !self.raw.raft.promotable() {
            return Role::Learner;
        }
        match self.raw.raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate => Role::Candidate,
            StateRole::PreCandidate => Role::PreCandidate,
        }
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The last index this node's matcher has been given.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The journal under the node.
    pub fn log(&self) -> &L {
        self.raw.store().log()
    }

    /// What the node reports about itself.
    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        let mut members: Vec<MemberProgress> = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .filter(|(id, _)| **id != self.config.node_id)
                .map(|(id, progress)| MemberProgress {
                    node_id: *id,
                    matched: progress.matched,
                })
                .collect()
        } else {
            Vec::new()
        };
        members.sort_by_key(|member| member.node_id);
        NodeStatus {
            node_id: self.config.node_id,
            role: self.role(),
            term: raft.term,
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            last_index: raft.raft_log.last_index(),
            members,
            early_elections: self.early_elections_count,
        }
    }
}
