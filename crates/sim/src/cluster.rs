//! The cluster simulator: three voting nodes, each the real replication [`Node`] (raft-rs
//! over the journal) on a simulated journal and hard state, with a shadow matcher that runs
//! what the node commits. A simulated network carries the real replication frames
//! ([`encode_frame`] / [`decode_frame`]) and drops, delays, reorders, duplicates and damages
//! them; partitions cut links both ways or one way; any node crashes (kill -9 or power loss)
//! at any step and comes back later. A client proposes commands to whichever node it believes
//! leads and is acknowledged through [`Proposals`], as a leader's gateway would be.
//!
//! Checkers, after every step:
//! 1. at most one node leads in any term, and only that node acknowledges in it;
//! 2. every node that runs the entry at an index runs the same entry (index, term, command),
//!    across crashes;
//! 3. every acknowledgement names the command committed at its sequence;
//! 4. a damaged frame is refused by the framing, and a forged message (a term-less append, a
//!    proposal from the network) by the node, never taken by Raft;
//! 5. a snapshot a node installs from its leader is the committed history's state at its
//!    index.
//!
//! In half the seeds followers also write snapshots of their shadow matcher now and then and
//! compact their log to the oldest they keep (the real `Node::compact`), so a node that comes
//! back behind its leader's log start is sent the leader's snapshot file and installs it
//! (the real `LogStore::install_snapshot`: its journal restarts after it).
//!
//! And at the end, with the network healed and every node up: the cluster elects a leader
//! and converges; every node's journal holds the same committed records, every acknowledged
//! command among them once under its sequence, no command twice; every node's state hash
//! equals a clean replay's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ringmatch_journal::{Durability, JournalRecord};
use ringmatch_matcher::{Engine, EventSink};
use ringmatch_proto::{Command, CommandType, Event, OrderKind, Side, TimeInForce};
use ringmatch_replication::{
    decode_frame, encode_frame, Committed, Decoded, HardState, Node, NodeConfig, Outcome,
    Proposals, ReplicationError, Role,
};

use crate::rng::Rng;
use crate::storage::{
    lock, Crash, Faults, JournalImage, Shared, SimHardState, SimJournal, SimRaftSnapshots,
};
use crate::{matcher_config, Failure};

/// Snapshot files a member keeps.
const SNAPSHOTS_KEPT_COUNT: usize = 2;

/// The engine of a snapshot file of the state after `seq`.
fn restore_snapshot(seq: u64, bytes: &[u8]) -> Result<Engine, String> {
    let snapshot = ringmatch_journal::decode_snapshot(seq, bytes)?;
    Engine::restore(matcher_config(), &snapshot.state).map_err(|error| error.to_string())
}

/// The cluster's id in every frame.
const CLUSTER_ID: u64 = 0x00C1_u64;
/// The voting members.
const VOTERS: [u64; 3] = [1, 2, 3];
/// The learner, in the runs that have one.
const LEARNER: u64 = 4;
/// Ticks between a leader's heartbeats.
const HEARTBEAT_TICKS: usize = 2;
/// At most this many steps after the faults stop for the cluster to converge.
const QUIET_STEPS_MAX: u64 = 3_000;

/// A rule the cluster simulator can break inside its own driver and ports, to show that its
/// checkers find what the rule prevents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRevert {
    /// The leader acknowledges a command when it proposes it, before a majority has it.
    AckAtPropose,
    /// A proposal counts as sequenced when any entry is committed at its index, whatever
    /// its term.
    AckByIndex,
    /// The hard state (term, vote) is never made durable: a node forgets its vote in a crash.
    ForgetVote,
    /// The journal is never synced, yet entries count as written (followers ack what a power
    /// loss takes).
    UnsyncedJournal,
}

impl ClusterRevert {
    /// Every switch.
    pub const ALL: &'static [ClusterRevert] = &[
        ClusterRevert::AckAtPropose,
        ClusterRevert::AckByIndex,
        ClusterRevert::ForgetVote,
        ClusterRevert::UnsyncedJournal,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ClusterRevert::AckAtPropose => "ack-at-propose",
            ClusterRevert::AckByIndex => "ack-by-index",
            ClusterRevert::ForgetVote => "forget-vote",
            ClusterRevert::UnsyncedJournal => "unsynced-journal",
        }
    }

    /// The switch of a name.
    pub fn from_name(name: &str) -> Option<ClusterRevert> {
        ClusterRevert::ALL
            .iter()
            .copied()
            .find(|revert| revert.name() == name)
    }
}

/// What a cluster run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSummary {
    /// Steps taken, the quiet end included.
    pub steps_count: u64,
    /// Node crashes.
    pub crashes_count: u64,
    /// Of which power losses.
    pub power_losses_count: u64,
    /// Terms that had a leader.
    pub leader_terms_count: u64,
    /// Commands acknowledged to the client.
    pub acks_count: u64,
    /// Proposals overridden by another leader's entries (not acknowledged; a client resends).
    pub lost_count: u64,
    /// Whether the run had a learner (a non-voting fourth member).
    pub with_learner: bool,
    /// Records committed at the end.
    pub committed_count: u64,
    /// Frames sent.
    pub frames_count: u64,
    /// Frames damaged on the way, all refused.
    pub damaged_frames_count: u64,
    /// Well-formed messages no member sends (term-less appends, proposals), all refused.
    pub forged_messages_count: u64,
    /// Whether followers compacted their logs in this run.
    pub with_compaction: bool,
    /// Log compactions to a shadow snapshot.
    pub compactions_count: u64,
    /// Snapshots installed from a leader.
    pub installs_count: u64,
    /// Words that a member's process had ended, given to the others (a few of them false).
    pub gone_notices_count: u64,
    /// Elections stood in at once on such a word, without waiting out the timeout.
    pub early_elections_count: u64,
}

/// The run's choices, drawn from the seed.
struct Plan {
    steps_count: u64,
    /// The voters', then the learner's (a learner never stands for election).
    election_ticks: [usize; 4],
    with_learner: bool,
    commit_stored_every: u64,
    delay_max: u64,
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    damage_per_mille: u64,
    crash_per_mille: u64,
    partition_per_mille: u64,
    propose_per_mille: u64,
    /// Per step and follower, the chance it snapshots its shadow matcher and compacts (0:
    /// never). Drawn from a second generator, with the decisions it drives, so the runs of
    /// the seeds without compaction stay as they were.
    compact_per_mille: u64,
    /// After a process crash, the chance that each other member is told the process ended
    /// (the production transport finds it by a refused connection; a power loss refuses
    /// nothing), and per step the chance of such a word that is false (the member lives).
    /// Drawn from a third generator (0 for half the seeds), like `compact_per_mille`.
    gone_notice_per_mille: u64,
    false_notice_per_mille: u64,
}

impl Plan {
    fn draw(rng: &mut Rng) -> Plan {
        // Distinct fixed election timeouts: no split vote lasts forever, and a seed replays.
        let base = rng.between(8, 14) as usize;
        let mut election_ticks = [base, base + 4, base + 8, base + 12];
        for index in (1..3).rev() {
            let other = rng.below(index as u64 + 1) as usize;
            election_ticks.swap(index, other);
        }
        let steps_count = rng.between(300, 1_200);
        Plan {
            steps_count,
            // Small, so that the commit index is stored (and restarts start from it) in every
            // run; taken from a draw already made, so the seeds' runs stay as they were.
            commit_stored_every: 1 + steps_count % 64,
            election_ticks,
            with_learner: rng.chance(500),
            delay_max: rng.between(1, 4),
            drop_per_mille: rng.between(0, 80),
            duplicate_per_mille: rng.between(0, 30),
            damage_per_mille: rng.between(0, 10),
            crash_per_mille: rng.between(2, 15),
            partition_per_mille: rng.between(0, 10),
            propose_per_mille: rng.between(200, 600),
            compact_per_mille: 0,
            gone_notice_per_mille: 0,
            false_notice_per_mille: 0,
        }
    }
}

/// A node that is up.
struct Up {
    node: Node<SimJournal, SimHardState>,
    engine: Engine,
    proposals: Proposals<u64>,
}

/// One member: its disk, and the process when it runs.
struct Member {
    id: u64,
    journal: Shared<JournalImage>,
    /// Snapshot files by sequence (durable once written).
    snapshots: Shared<BTreeMap<u64, Vec<u8>>>,
    hard_state: Shared<Option<HardState>>,
    faults: Shared<Faults>,
    up: Option<Up>,
    restart_at: u64,
}

/// A frame on the wire.
struct InFlight {
    deliver_at: u64,
    to: u64,
    from: u64,
    bytes: Vec<u8>,
    damaged: bool,
    /// A well-formed frame whose message no member sends (term-less, or a proposal): the node
    /// must refuse it.
    forged: bool,
}

struct Discard;

impl EventSink for Discard {
    fn push(&mut self, _event: &Event) {}
}

struct Cluster {
    seed: u64,
    revert: Option<ClusterRevert>,
    rng: Rng,
    /// Draws compaction decisions only (see [`Plan::compact_per_mille`]).
    compaction_rng: Rng,
    /// Draws the words that a process ended only (see [`Plan::gone_notice_per_mille`]).
    notice_rng: Rng,
    /// Such words on their way: (step due, to, the member said to be gone).
    notices: Vec<(u64, u64, u64)>,
    plan: Plan,
    step: u64,
    members: Vec<Member>,
    wire: Vec<InFlight>,
    /// Cut links, (from, to).
    cut: BTreeSet<(u64, u64)>,
    heal_at: u64,
    faults_on: bool,
    /// The leader of each term that had one.
    leaders: BTreeMap<u64, u64>,
    /// Every entry any node has run, by index: the one committed history.
    committed: BTreeMap<u64, Committed>,
    /// The client's commands, by token (the timestamp, unique per command).
    commands: HashMap<u64, Command>,
    next_token: u64,
    /// Acknowledged tokens and their sequences.
    acks: BTreeMap<u64, u64>,
    believed_leader: u64,
    summary: ClusterSummary,
}

/// Runs one seed of the cluster simulator.
pub fn run_cluster_seed(seed: u64) -> Result<ClusterSummary, Failure> {
    run_cluster_seed_with(seed, None)
}

/// Runs one seed of the cluster simulator with a rule broken.
pub fn run_cluster_seed_with(
    seed: u64,
    revert: Option<ClusterRevert>,
) -> Result<ClusterSummary, Failure> {
    let mut cluster = Cluster::new(seed, revert);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.run()));
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(Failure {
            seed,
            step: cluster.step,
            problem: format!("panicked: {}", crate::panic_message(&*panic)),
        }),
    }
}

/// Runs `count` cluster seeds from `first_seed`; the failures, in seed order.
pub fn run_cluster_seeds(
    first_seed: u64,
    count: u64,
    revert: Option<ClusterRevert>,
) -> Vec<Failure> {
    (first_seed..first_seed + count)
        .filter_map(|seed| run_cluster_seed_with(seed, revert).err())
        .collect()
}

impl Cluster {
    fn new(seed: u64, revert: Option<ClusterRevert>) -> Cluster {
        let mut rng = Rng::new(seed ^ 0xC1C1_C1C1);
        let mut plan = Plan::draw(&mut rng);
        let mut compaction_rng = Rng::new(seed ^ 0x5A5A_0C0C);
        // The forget-vote revert loses every hard state store, the log start included.
        if compaction_rng.chance(500) && revert != Some(ClusterRevert::ForgetVote) {
            plan.compact_per_mille = compaction_rng.between(5, 40);
        }
        let mut notice_rng = Rng::new(seed ^ 0x60E5_D1ED);
        if notice_rng.chance(500) {
            plan.gone_notice_per_mille = notice_rng.between(300, 1_000);
            plan.false_notice_per_mille = notice_rng.between(0, 5);
        }
        let learners: &[u64] = if plan.with_learner { &[LEARNER] } else { &[] };
        let members = VOTERS
            .iter()
            .chain(learners)
            .map(|&id| Member {
                id,
                journal: Shared::default(),
                snapshots: Shared::default(),
                hard_state: Shared::default(),
                faults: Shared::default(),
                up: None,
                restart_at: 0,
            })
            .collect();
        Cluster {
            seed,
            revert,
            rng,
            compaction_rng,
            notice_rng,
            notices: Vec::new(),
            plan,
            step: 0,
            members,
            wire: Vec::new(),
            cut: BTreeSet::new(),
            heal_at: 0,
            faults_on: true,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            commands: HashMap::new(),
            next_token: 0,
            acks: BTreeMap::new(),
            believed_leader: 1,
            summary: ClusterSummary::default(),
        }
    }

    fn fail(&self, problem: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            problem,
        }
    }

    fn config(&self, id: u64) -> NodeConfig {
        NodeConfig {
            cluster_id: CLUSTER_ID,
            node_id: id,
            voters: VOTERS.to_vec(),
            learners: if self.plan.with_learner {
                vec![LEARNER]
            } else {
                Vec::new()
            },
            election_ticks: self.plan.election_ticks[(id - 1) as usize],
            heartbeat_ticks: HEARTBEAT_TICKS,
            randomized_election: false,
            commit_stored_every: self.plan.commit_stored_every,
        }
    }

    fn run(&mut self) -> Result<ClusterSummary, Failure> {
        for index in 0..self.members.len() {
            self.start(index)?;
        }
        while self.step < self.plan.steps_count {
            self.step += 1;
            self.faults();
            self.step_once()?;
        }
        // The quiet end: heal the network, bring every node back, stop the faults.
        self.faults_on = false;
        self.cut.clear();
        for index in 0..self.members.len() {
            if self.members[index].up.is_none() {
                self.start(index)?;
            }
        }
        let quiet_from = self.step;
        loop {
            self.step += 1;
            self.step_once()?;
            if self.converged() {
                break;
            }
            if self.step - quiet_from > QUIET_STEPS_MAX {
                let states: Vec<String> = self
                    .members
                    .iter()
                    .filter_map(|member| member.up.as_ref())
                    .map(|up| format!("{:?}", up.node.status()))
                    .collect();
                return Err(self.fail(format!(
                    "the healed cluster did not converge in {QUIET_STEPS_MAX} steps: {}",
                    states.join("; ")
                )));
            }
        }
        self.check_end()?;
        self.summary.steps_count = self.step;
        self.summary.leader_terms_count = self.leaders.len() as u64;
        self.summary.acks_count = self.acks.len() as u64;
        self.summary.committed_count = self.committed.len() as u64;
        self.summary.with_learner = self.plan.with_learner;
        self.summary.with_compaction = self.plan.compact_per_mille > 0;
        Ok(self.summary.clone())
    }

    /// Starts member `index` on what its disk holds: the journal opened (torn tail cut), the
    /// shadow matcher replayed up to the stored commit index, then the node.
    fn start(&mut self, index: usize) -> Result<(), Failure> {
        let member = &self.members[index];
        let durability = if self.revert == Some(ClusterRevert::UnsyncedJournal) {
            Durability::None
        } else {
            Durability::Batch
        };
        let journal = SimJournal::open(
            Arc::clone(&member.journal),
            Arc::clone(&member.faults),
            durability,
        )
        .map_err(|problem| self.fail(format!("node {} start-up failed: {problem}", member.id)))?;
        let (commit, log_start) =
            lock(&member.hard_state).map_or((0, 0), |state| (state.commit, state.log_start));
        // The shadow matcher: from the newest snapshot between the log start and the commit
        // index (when the log starts after one), then the journal up to the commit index.
        let mut engine = Engine::new(matcher_config()).expect("a valid configuration");
        let mut from = 1;
        if log_start > 0 {
            let snapshots = lock(&member.snapshots);
            let Some((seq, bytes)) = snapshots.range(log_start..=commit).next_back() else {
                return Err(self.fail(format!(
                    "node {} has no snapshot from its log start {log_start} to its commit {commit}",
                    member.id
                )));
            };
            engine = restore_snapshot(*seq, bytes)
                .map_err(|problem| self.fail(format!("node {}: {problem}", member.id)))?;
            from = seq + 1;
        }
        for record in lock(&member.journal).records() {
            if record.seq >= from && record.seq <= commit {
                engine.apply(record.seq, &record.command, &mut Discard);
            }
        }
        let node = Node::open(
            &self.config(member.id),
            journal,
            SimHardState::new(
                Arc::clone(&member.hard_state),
                self.revert != Some(ClusterRevert::ForgetVote),
            ),
            Some(Box::new(SimRaftSnapshots::new(
                Arc::clone(&member.snapshots),
                SNAPSHOTS_KEPT_COUNT,
            ))),
            commit,
        )
        .map_err(|error| self.fail(format!("node {} did not open: {error}", member.id)))?;
        self.members[index].up = Some(Up {
            node,
            engine,
            proposals: Proposals::default(),
        });
        Ok(())
    }

    fn faults(&mut self) {
        if !self.faults_on {
            return;
        }
        for index in 0..self.members.len() {
            let down = self.members[index].up.is_none();
            if down && self.step >= self.members[index].restart_at {
                // A node that cannot start is a failure found at the next check; keep it down.
                if self.start(index).is_err() {
                    self.members[index].restart_at = u64::MAX;
                }
            } else if !down && self.rng.chance(self.plan.crash_per_mille) {
                let crash = if self.rng.chance(500) {
                    Crash::PowerLoss
                } else {
                    Crash::Process
                };
                self.summary.crashes_count += 1;
                if crash == Crash::PowerLoss {
                    self.summary.power_losses_count += 1;
                }
                let member = &mut self.members[index];
                member.up = None;
                lock(&member.journal).crash(crash, &mut self.rng, false);
                member.restart_at = self.step + self.rng.between(1, 60);
                if crash == Crash::Process {
                    self.tell_gone(self.members[index].id);
                }
            }
        }
        self.false_notice();
        if self.step >= self.heal_at && !self.cut.is_empty() {
            self.cut.clear();
        }
        if self.cut.is_empty() && self.rng.chance(self.plan.partition_per_mille) {
            let ids: Vec<u64> = self.members.iter().map(|member| member.id).collect();
            let isolated = ids[self.rng.below(ids.len() as u64) as usize];
            let one_way = self.rng.chance(300);
            for &other in ids.iter().filter(|&&other| other != isolated) {
                self.cut.insert((isolated, other));
                if !one_way {
                    self.cut.insert((other, isolated));
                }
            }
            self.heal_at = self.step + self.rng.between(10, 150);
        }
    }

    /// Words to the other members that `gone`'s process ended, each with the plan's chance,
    /// arriving after a delay.
    fn tell_gone(&mut self, gone: u64) {
        if self.plan.gone_notice_per_mille == 0 {
            return;
        }
        for to in self.members.iter().map(|member| member.id) {
            if to != gone && self.notice_rng.chance(self.plan.gone_notice_per_mille) {
                let due = self.step + self.notice_rng.below(self.plan.delay_max + 1);
                self.notices.push((due, to, gone));
            }
        }
    }

    /// Now and then, a false word to a member that its leader ended while the leader lives.
    fn false_notice(&mut self) {
        if self.plan.false_notice_per_mille == 0
            || !self.notice_rng.chance(self.plan.false_notice_per_mille)
        {
            return;
        }
        let index = self.notice_rng.below(self.members.len() as u64) as usize;
        let Some(up) = &self.members[index].up else {
            return;
        };
        let leader_id = up.node.status().leader_id;
        if leader_id != 0 {
            self.notices
                .push((self.step, self.members[index].id, leader_id));
        }
    }

    /// Hands each member the words due now.
    fn deliver_notices(&mut self) {
        let step = self.step;
        let due: Vec<(u64, u64, u64)> = self
            .notices
            .iter()
            .copied()
            .filter(|(at, _, _)| *at <= step)
            .collect();
        self.notices.retain(|(at, _, _)| *at > step);
        for (_, to, gone) in due {
            let Some(member) = self.members.iter_mut().find(|member| member.id == to) else {
                continue;
            };
            if let Some(up) = &mut member.up {
                self.summary.gone_notices_count += 1;
                let before = up.node.early_elections_count();
                up.node.peer_gone(gone);
                self.summary.early_elections_count += up.node.early_elections_count() - before;
            }
        }
    }

    fn step_once(&mut self) -> Result<(), Failure> {
        for member in &mut self.members {
            if let Some(up) = &mut member.up {
                let before = up.node.early_elections_count();
                up.node.tick();
                self.summary.early_elections_count += up.node.early_elections_count() - before;
            }
        }
        self.deliver_notices();
        self.deliver()?;
        if self.faults_on && self.rng.chance(self.plan.propose_per_mille) {
            self.propose();
        }
        for index in 0..self.members.len() {
            self.process(index)?;
        }
        Ok(())
    }

    fn deliver(&mut self) -> Result<(), Failure> {
        let mut due = Vec::new();
        let mut index = 0;
        while index < self.wire.len() {
            if self.wire[index].deliver_at <= self.step {
                due.push(self.wire.swap_remove(index));
            } else {
                index += 1;
            }
        }
        // Frames due together arrive in a seed-chosen order.
        for index in (1..due.len()).rev() {
            let other = self.rng.below(index as u64 + 1) as usize;
            due.swap(index, other);
        }
        for frame in due {
            let Some(position) = self.members.iter().position(|m| m.id == frame.to) else {
                continue;
            };
            if self.members[position].up.is_none() || self.cut.contains(&(frame.from, frame.to)) {
                continue;
            }
            let decoded = decode_frame(CLUSTER_ID, frame.to, &frame.bytes);
            let message = match decoded {
                Ok(Decoded::Frame { message, used, .. }) if used == frame.bytes.len() => message,
                Ok(_) | Err(_) if frame.damaged => continue,
                Ok(_) => {
                    return Err(self.fail(format!(
                        "a frame from node {} to node {} was not read whole",
                        frame.from, frame.to
                    )))
                }
                Err(error) => {
                    return Err(self.fail(format!(
                        "an undamaged frame from node {} to node {} was refused: {error}",
                        frame.from, frame.to
                    )))
                }
            };
            if frame.damaged {
                return Err(self.fail(format!(
                    "a damaged frame from node {} to node {} was accepted",
                    frame.from, frame.to
                )));
            }
            let up = self.members[position].up.as_mut().expect("checked above");
            match (up.node.step(*message), frame.forged) {
                (Ok(()), false) | (Err(_), true) => {}
                (Ok(()), true) => {
                    return Err(self.fail(format!(
                        "node {} took a forged message from node {}",
                        frame.to, frame.from
                    )))
                }
                (Err(error), false) => {
                    return Err(self.fail(format!(
                        "node {} refused a member's message: {error}",
                        frame.to
                    )))
                }
            }
        }
        Ok(())
    }

    fn draw_command(&mut self) -> Command {
        self.next_token += 1;
        let token = self.next_token;
        let account = 1 + (token % 2) as u32;
        let side = if self.rng.chance(500) {
            Side::Buy
        } else {
            Side::Sell
        };
        let mut command = match self.rng.below(10) {
            0..=6 => {
                let mut command = Command::limit(
                    account,
                    1,
                    side,
                    self.rng.between(95, 105) as i64,
                    self.rng.between(1, 5),
                );
                command.client_order_id = token;
                command
            }
            7 => {
                let mut command = Command::limit(account, 1, side, 0, self.rng.between(1, 5));
                command.kind = OrderKind::Market;
                command.tif = TimeInForce::Ioc;
                // Half of them are stop-limits instead, waiting for a trade at their stop.
                if self.rng.chance(500) {
                    command.kind = OrderKind::StopLimit;
                    command.tif = TimeInForce::Gtc;
                    command.stop_price = self.rng.between(95, 105) as i64;
                    command.price = self.rng.between(95, 105) as i64;
                }
                command.client_order_id = token;
                command
            }
            _ => {
                let mut command = Command::empty(CommandType::Cancel);
                command.account = account;
                command.instrument = 1;
                command.client_order_id = self.rng.between(1, token);
                command
            }
        };
        // The timestamp names the command: no two commands share one.
        command.timestamp_ns = token;
        self.commands.insert(token, command);
        command
    }

    /// The client sends a few commands to the node it believes leads; a node that does not
    /// lead tells it who does.
    fn propose(&mut self) {
        let Some(position) = self
            .members
            .iter()
            .position(|m| m.id == self.believed_leader)
        else {
            return;
        };
        let Some(up) = &self.members[position].up else {
            self.believed_leader = VOTERS[self.rng.below(3) as usize];
            return;
        };
        let term = up.node.term();
        // One proposal of a few commands, as the leader's pipeline hands it a ring batch.
        let count = self.rng.between(1, 4);
        let commands: Vec<(u64, Command)> = (0..count)
            .map(|_| {
                let command = self.draw_command();
                (command.timestamp_ns, command)
            })
            .collect();
        let up = self.members[position].up.as_mut().expect("checked above");
        match up.node.propose_all(&commands) {
            Ok(first) => {
                for (offset, (token, _)) in commands.iter().enumerate() {
                    let index = first + offset as u64;
                    up.proposals.proposed(index, term, *token);
                    if self.revert == Some(ClusterRevert::AckAtPropose) {
                        self.acks.insert(*token, index);
                    }
                }
            }
            Err(ReplicationError::NotLeader { leader_id }) => {
                self.believed_leader = if leader_id == 0 {
                    VOTERS[self.rng.below(3) as usize]
                } else {
                    leader_id
                };
            }
            Err(error) => panic!("a proposal failed: {error}"),
        }
    }

    fn process(&mut self, index: usize) -> Result<(), Failure> {
        let id = self.members[index].id;
        let Some(up) = self.members[index].up.as_mut() else {
            return Ok(());
        };
        let mut sent = Vec::new();
        let committed = up
            .node
            .process(&mut |message| sent.push(message))
            .map_err(|error| Failure {
                seed: self.seed,
                step: self.step,
                problem: format!("node {id} failed: {error}"),
            })?;
        let installed = up.node.take_installed_snapshot();
        let (role, term) = (up.node.role(), up.node.term());
        for message in sent {
            let mut bytes = Vec::new();
            encode_frame(CLUSTER_ID, &message, &mut bytes);
            self.summary.frames_count += 1;
            if self.rng.chance(self.plan.drop_per_mille) {
                continue;
            }
            let copies = if self.rng.chance(self.plan.duplicate_per_mille) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut frame = InFlight {
                    deliver_at: self.step + self.rng.between(1, self.plan.delay_max),
                    to: message.to,
                    from: message.from,
                    bytes: bytes.clone(),
                    damaged: false,
                    forged: false,
                };
                if self.faults_on && self.rng.chance(self.plan.damage_per_mille) {
                    let at = self.rng.below(frame.bytes.len() as u64) as usize;
                    frame.bytes[at] ^= 1 << self.rng.below(8);
                    frame.damaged = true;
                    self.summary.damaged_frames_count += 1;
                }
                self.wire.push(frame);
            }
        }
        if self.faults_on && self.rng.chance(self.plan.damage_per_mille) {
            self.forge(id);
        }
        if role == Role::Leader && id == LEARNER {
            return Err(self.fail(format!("the learner leads in term {term}")));
        }
        if role == Role::Leader {
            match self.leaders.insert(term, id) {
                Some(other) if other != id => {
                    return Err(self.fail(format!(
                        "two leaders in term {term}: nodes {other} and {id}"
                    )))
                }
                _ => {}
            }
        }
        let (before, after): (Vec<Committed>, Vec<Committed>) = committed
            .into_iter()
            .partition(|entry| installed.is_some_and(|seq| entry.record.seq <= seq));
        for entry in before {
            self.run_committed(index, entry)?;
        }
        if let Some(seq) = installed {
            self.install(index, seq)?;
        }
        for entry in after {
            self.run_committed(index, entry)?;
        }
        if role != Role::Leader && self.compaction_rng.chance(self.plan.compact_per_mille) {
            self.compact(index)?;
        }
        Ok(())
    }

    /// Member `index` installed its leader's snapshot of the state after `seq`: its shadow
    /// matcher restores it, which must be the committed history's state there (checker 5).
    fn install(&mut self, index: usize, seq: u64) -> Result<(), Failure> {
        self.summary.installs_count += 1;
        let id = self.members[index].id;
        let bytes = lock(&self.members[index].snapshots).get(&seq).cloned();
        let Some(bytes) = bytes else {
            return Err(self.fail(format!(
                "node {id} installed a snapshot of sequence {seq} it does not hold"
            )));
        };
        let engine = restore_snapshot(seq, &bytes)
            .map_err(|problem| self.fail(format!("node {id}: {problem}")))?;
        let mut clean = Engine::new(matcher_config()).expect("a valid configuration");
        for (at, entry) in self.committed.range(..=seq) {
            clean.apply(*at, &entry.record.command, &mut Discard);
        }
        if self.committed.range(..=seq).count() as u64 != seq {
            return Err(self.fail(format!(
                "node {id} installed a snapshot of sequence {seq}, but the committed history \
                 does not reach it"
            )));
        }
        if engine.state_hash() != clean.state_hash() {
            return Err(self.fail(format!(
                "node {id} installed a snapshot of sequence {seq} whose state differs from the \
                 committed history's there"
            )));
        }
        self.members[index]
            .up
            .as_mut()
            .expect("a running node")
            .engine = engine;
        Ok(())
    }

    /// Member `index` snapshots its shadow matcher and compacts its log to the oldest
    /// snapshot it keeps.
    fn compact(&mut self, index: usize) -> Result<(), Failure> {
        let id = self.members[index].id;
        let member = &mut self.members[index];
        let Some(up) = member.up.as_mut() else {
            return Ok(());
        };
        let applied = up.node.applied();
        if applied == 0 {
            return Ok(());
        }
        let store = SimRaftSnapshots::new(Arc::clone(&member.snapshots), SNAPSHOTS_KEPT_COUNT);
        store.write(applied, &up.engine.encode_state());
        let oldest = *lock(&member.snapshots)
            .keys()
            .next()
            .expect("a snapshot was just written");
        up.node.compact(oldest, None).map_err(|error| Failure {
            seed: self.seed,
            step: self.step,
            problem: format!("node {id} failed to compact: {error}"),
        })?;
        self.summary.compactions_count += 1;
        Ok(())
    }

    /// Puts on the wire, as if from member `from`, a well-formed frame whose message no
    /// member sends: an append without a term (Raft would take it as the current leader's),
    /// or a proposal (commands enter only through the leader's pipeline).
    fn forge(&mut self, from: u64) {
        let others: Vec<u64> = self
            .members
            .iter()
            .map(|member| member.id)
            .filter(|&id| id != from)
            .collect();
        let to = others[self.rng.below(others.len() as u64) as usize];
        let mut message = ringmatch_replication::Message::default();
        let proposal = self.rng.chance(500);
        message.set_msg_type(if proposal {
            ringmatch_replication::MessageType::MsgPropose
        } else {
            ringmatch_replication::MessageType::MsgAppend
        });
        message.from = from;
        message.to = to;
        message.term = if proposal { self.rng.between(1, 5) } else { 0 };
        let command = self.draw_command();
        let last = self.committed.keys().next_back().copied().unwrap_or(0);
        message.index = last;
        message.commit = last + 1;
        message.entries = vec![ringmatch_replication::Entry {
            index: last + 1,
            term: message.term,
            data: ringmatch_replication::log::entry_data(command.timestamp_ns, &command).into(),
            ..Default::default()
        }]
        .into();
        let mut bytes = Vec::new();
        encode_frame(CLUSTER_ID, &message, &mut bytes);
        self.summary.forged_messages_count += 1;
        self.wire.push(InFlight {
            deliver_at: self.step + 1,
            to,
            from,
            bytes,
            damaged: false,
            forged: true,
        });
    }

    /// Member `index` runs one committed entry: checkers 1 to 3.
    fn run_committed(&mut self, index: usize, entry: Committed) -> Result<(), Failure> {
        let id = self.members[index].id;
        let seq = entry.record.seq;
        match self.committed.get(&seq) {
            Some(known) if *known != entry => {
                return Err(self.fail(format!(
                    "index {seq} committed as {known:?} and, on node {id}, as {entry:?}"
                )))
            }
            Some(_) => {}
            None => {
                self.committed.insert(seq, entry);
            }
        }
        let up = self.members[index].up.as_mut().expect("a running node");
        up.engine.apply(seq, &entry.record.command, &mut Discard);
        let mut outcome = up.proposals.committed(seq, entry.term);
        if let (Some(ClusterRevert::AckByIndex), Some(Outcome::Lost { token })) =
            (self.revert, &outcome)
        {
            outcome = Some(Outcome::Sequenced { token: *token, seq });
        }
        if self.revert == Some(ClusterRevert::AckAtPropose) {
            // Acknowledged already, at the proposal.
            outcome = None;
        }
        match outcome {
            Some(Outcome::Sequenced { token, seq }) => {
                if self.leaders.get(&entry.term) != Some(&id) {
                    let leader = self
                        .leaders
                        .get(&entry.term)
                        .map_or("no node".to_string(), |leader| format!("node {leader}"));
                    return Err(self.fail(format!(
                        "node {id} acknowledged sequence {seq} in term {}, which {leader} led",
                        entry.term
                    )));
                }
                let command = self.commands[&token];
                if entry.record.command != command {
                    return Err(self.fail(format!(
                        "sequence {seq} was acknowledged for {command:?} but {:?} is committed \
                         there",
                        entry.record.command
                    )));
                }
                if self.acks.insert(token, seq).is_some() {
                    return Err(self.fail(format!("command {token} was acknowledged twice")));
                }
            }
            Some(Outcome::Lost { .. }) => self.summary.lost_count += 1,
            None => {}
        }
        Ok(())
    }

    /// Whether a leader leads every node and every node has run everything it holds.
    fn converged(&self) -> bool {
        let statuses: Vec<_> = self
            .members
            .iter()
            .filter_map(|member| member.up.as_ref())
            .map(|up| (up.node.status(), up.node.applied()))
            .collect();
        if statuses.len() != self.members.len() {
            return false;
        }
        let (first, _) = &statuses[0];
        first.leader_id != 0
            && statuses.iter().all(|(status, applied)| {
                status.leader_id == first.leader_id
                    && status.term == first.term
                    && status.last_index == first.last_index
                    && *applied == status.last_index
            })
            && statuses
                .iter()
                .any(|(status, _)| status.role == Role::Leader)
    }

    /// The end: every node's journal, the acknowledgements and the state hashes.
    fn check_end(&self) -> Result<(), Failure> {
        let history: Vec<JournalRecord> = self.committed.values().map(|c| c.record).collect();
        if let Some((position, record)) = history
            .iter()
            .enumerate()
            .find(|(position, record)| record.seq != *position as u64 + 1)
        {
            return Err(self.fail(format!(
                "the committed history has a hole: position {position} holds sequence {}",
                record.seq
            )));
        }
        let mut clean = Engine::new(matcher_config()).expect("a valid configuration");
        let mut seen = BTreeSet::new();
        for record in &history {
            clean.apply(record.seq, &record.command, &mut Discard);
            if record.command.term_opened().is_none() && !seen.insert(record.timestamp_ns) {
                return Err(self.fail(format!(
                    "command {} is committed twice (again at sequence {})",
                    record.timestamp_ns, record.seq
                )));
            }
        }
        for (token, seq) in &self.acks {
            match history.get((*seq - 1) as usize) {
                Some(record) if record.command == self.commands[token] => {}
                other => {
                    return Err(self.fail(format!(
                        "acknowledged command {token} is not at its sequence {seq} in the end: \
                         {other:?}"
                    )))
                }
            }
        }
        for member in &self.members {
            let up = member.up.as_ref().expect("every node is up at the end");
            let image = lock(&member.journal);
            let records = image.records();
            let kept = history.get((image.first_seq - 1) as usize..).unwrap_or(&[]);
            if records != kept {
                return Err(self.fail(format!(
                    "node {}'s journal ({} records from sequence {}) differs from the committed \
                     history ({} records)",
                    member.id,
                    records.len(),
                    image.first_seq,
                    history.len()
                )));
            }
            if up.engine.state_hash() != clean.state_hash() {
                return Err(self.fail(format!(
                    "node {}'s state hash differs from a clean replay's",
                    member.id
                )));
            }
        }
        Ok(())
    }
}
