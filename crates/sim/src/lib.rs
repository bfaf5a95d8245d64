//! The seeded simulator of ringmatch: it drives the real stage structs (Journaler,
//! Replicator, Matcher, Publisher, Responder, snapshot writer, from `ringmatch_pipeline::stages`)
//! and the real start-up recovery (`recover_from`) step by step, in a seed-chosen
//! interleaving, on one thread, over simulated storage (`storage`) that models the page
//! cache, with crashes and faults injected at any step. A snapshot is copied the way the
//! running Matcher copies it: begun at a command boundary, its pages copied in steps between
//! commands (and by the engine's writes), then encoded. After every restart and at the end it
//! checks:
//!
//! 1. every acknowledged command is in the journal under its acknowledged sequence;
//! 2. the output (the events file) equals a clean replay of the journal: no gap, no double,
//!    complete (start-up always completes it);
//! 3. the recovered state hash equals the clean replay's;
//! 4. no session ever saw an event of its own command before that command's ack;
//! 5. no order was placed twice: after a crash the sessions resend, as possible resends, the
//!    places they were not acknowledged (as `FailoverClient` does), and the engine must
//!    answer one it had taken with that place's outcome (`resent`, naming its sequence).
//!
//! A failure names the seed, and `scripts/sim.sh --seed S` replays it exactly. Two switches
//! revert, inside the simulator's own ports, the fixes that made acknowledgements durable
//! ([`Revert::AckAtSubmit`]: the ack leaves when the command enters the input ring, as the
//! gateway's protocol version 1 did) and that keep the events file from being left with a gap
//! ([`Revert::UnsyncedSnapshots`]: snapshots without the events-file sync and the events
//! mark); the tests show that each makes named seeds fail. A third,
//! [`Revert::ResendAsNew`], has the sessions resend without the possible-resend mark, and
//! checker 5 finds orders placed twice.
//!
//! It knows nothing of threads, sockets or Kafka: the ring runtime, the gateway's sockets and
//! the Kafka publisher are outside what it drives. The journal is modelled at the level of
//! its records (the real record layout and checks, written sequentially); the real journal's
//! byte-level recovery is tested in `crates/journal/tests`.

pub mod cluster;
pub mod rng;
pub mod storage;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use ringmatch_journal::{Durability, JournalStats};
use ringmatch_matcher::{Engine, EventSink, InstrumentSpec, Limits, MatcherConfig};
use ringmatch_pipeline::stages::{
    EventRouter, Journaler, Matcher, Publisher, Replicator, Responder, SnapshotRequest,
    SnapshotWriter, Written,
};
use ringmatch_pipeline::{recover_from, InputSlot, MarketData, Metrics, OutputSink, OutputSlot};
use ringmatch_proto::{Command, CommandType, Event, EventType, OrderKind, Side, TimeInForce};

use crate::rng::Rng;
use crate::storage::{
    lock, Crash, EventsImage, Faults, JournalImage, Shared, SimEventsFile, SimJournal,
    SimSnapshots, SnapshotsImage,
};

/// A fix the simulator can revert inside its own ports, to show that its checkers find the
/// hole the fix closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revert {
    /// Sessions get their ack when the command enters the input ring, before it is durable.
    AckAtSubmit,
    /// The snapshot writer does not sync the events file and snapshots record no events
    /// mark, so start-up trusts every snapshot.
    UnsyncedSnapshots,
    /// Sessions resend unacknowledged places after a crash as plain places, without the
    /// possible-resend mark.
    ResendAsNew,
}

impl Revert {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Revert::AckAtSubmit => "ack-at-submit",
            Revert::UnsyncedSnapshots => "unsynced-snapshots",
            Revert::ResendAsNew => "resend-as-new",
        }
    }

    /// The switch named `name`.
    pub fn from_name(name: &str) -> Option<Revert> {
        [
            Revert::AckAtSubmit,
            Revert::UnsyncedSnapshots,
            Revert::ResendAsNew,
        ]
        .into_iter()
        .find(|revert| revert.name() == name)
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Steps taken.
    pub steps_count: u64,
    /// Crashes (and restarts).
    pub crashes_count: u64,
    /// Of which power losses.
    pub power_losses_count: u64,
    /// Commands in the journal at the end.
    pub commands_count: u64,
    /// Acks the sessions received.
    pub acks_count: u64,
    /// Snapshots written.
    pub snapshots_count: u64,
    /// Restarts that replayed from a snapshot.
    pub restarts_from_snapshot_count: u64,
    /// Faults injected.
    pub faults_count: u64,
    /// Crashes during start-up.
    pub crashes_during_recovery_count: u64,
    /// Places the sessions sent again, as possible resends, after a crash.
    pub resends_count: u64,
    /// Of which the engine had taken the original (answered `resent`).
    pub resent_count: u64,
    /// Stops that triggered (`triggered` events of the clean replay).
    pub triggered_count: u64,
    /// Orders that expired (of the clean replay).
    pub expired_count: u64,
    /// OCO legs that another leg cancelled (of the clean replay).
    pub oco_cancelled_count: u64,
}

/// A run that broke a checker (or panicked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The step at which it was found.
    pub step: u64,
    /// What went wrong.
    pub problem: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "seed {} failed at step {}: {}",
            self.seed, self.step, self.problem
        )
    }
}

/// Instruments, limits and rings of the simulated engine: small, so that limits, full rings
/// and snapshots all come up in a few hundred steps.
pub(crate) fn matcher_config() -> MatcherConfig {
    MatcherConfig {
        instruments: vec![InstrumentSpec {
            id: 1,
            symbol: "SIM".into(),
            tick_size: 1,
            lot_size: 1,
            min_price: 1,
            max_price: 200,
            max_qty: 1_000,
            session_end_ns: None,
        }],
        limits: Limits {
            orders_per_book_max: 64,
            orders_max: 64,
            accounts_max: 8,
            instruments_max: 1,
            resends_max: 24,
        },
    }
}

/// Slots of the simulated input ring.
const INPUT_RING_SLOTS_COUNT: usize = 32;
/// Snapshot requests waiting for the writer at most (as the ring runtime's).
const SNAPSHOTS_QUEUED_MAX: usize = 4;
/// Trading sessions (1..=this); session 0 is the admin.
const SESSIONS_COUNT: u32 = 2;

/// The run's choices, drawn from the seed.
struct Plan {
    durability: Durability,
    steps_count: u64,
    snapshot_every_commands: u64,
    snapshots_kept_count: usize,
    crash_per_mille: u64,
    fault_per_mille: u64,
}

impl Plan {
    fn draw(rng: &mut Rng) -> Plan {
        let durability = match rng.below(4) {
            0 => Durability::None,
            1 => Durability::Every,
            _ => Durability::Batch,
        };
        Plan {
            durability,
            steps_count: rng.between(200, 800),
            snapshot_every_commands: [0, 7, 16, 40][rng.below(4) as usize],
            snapshots_kept_count: rng.between(1, 3) as usize,
            crash_per_mille: rng.between(5, 30),
            fault_per_mille: rng.between(0, 10),
        }
    }
}

/// A trading session's client: what it sent, and what it was told.
#[derive(Default)]
struct Client {
    next_client_order_id: u64,
    /// Commands sent and not yet answered, by client order id.
    pending: HashMap<u64, Command>,
    /// Sequences acknowledged to this session.
    acked: BTreeMap<u64, u64>,
    /// Client order ids of its orders that may still rest, for cancels.
    live: Vec<u64>,
    /// The highest sequence acknowledged to this session.
    highest_acked_seq: u64,
    /// Resend floors of the places not yet acknowledged, by client order id.
    floors: HashMap<u64, u64>,
    /// Places to send again once the engine is back, in the order first sent.
    to_resend: VecDeque<Command>,
}

/// What the sessions saw, shared by the simulated router (owned by the Responder) and the
/// world.
#[derive(Default)]
struct Sessions {
    clients: HashMap<u32, Client>,
    /// Every ack ever received: sequence → the command it names.
    acks: BTreeMap<u64, Command>,
    acks_count: u64,
    /// The first broken rule a session saw.
    violation: Option<String>,
    /// The sessions that are connected now (a crash drops them all).
    connected: bool,
    /// Acks come at submission (the reverted gateway); the Responder's are ignored.
    ack_at_submit: bool,
}

impl Sessions {
    fn record_ack(&mut self, session: u32, client_order_id: u64, seq: u64) {
        let Some(client) = self.clients.get_mut(&session) else {
            return;
        };
        let Some(command) = client.pending.remove(&client_order_id) else {
            self.violation.get_or_insert(format!(
                "session {session} got an ack for client order id {client_order_id} it is not \
                 waiting for"
            ));
            return;
        };
        client.acked.insert(seq, client_order_id);
        client.highest_acked_seq = client.highest_acked_seq.max(seq);
        if command.command_type == CommandType::Place {
            client.floors.remove(&client_order_id);
            let may_wait = command.kind == OrderKind::Limit || command.kind.is_stop();
            if may_wait && !client.live.contains(&client_order_id) {
                client.live.push(client_order_id);
            }
        }
        if let Some(previous) = self.acks.insert(seq, command) {
            self.violation.get_or_insert(format!(
                "sequence {seq} was acknowledged twice: to {previous:?} and to {command:?}"
            ));
        }
        self.acks_count += 1;
    }
}

/// The Responder's router in the simulator: records acks, and checks that a session never
/// sees an event of its own command before that command's ack.
struct SimRouter {
    sessions: Shared<Sessions>,
}

impl EventRouter for SimRouter {
    fn ack(&mut self, session: u32, client_order_id: u64, seq: u64, _timestamp_ns: u64) {
        let mut sessions = lock(&self.sessions);
        if sessions.connected && !sessions.ack_at_submit {
            sessions.record_ack(session, client_order_id, seq);
        }
    }

    fn route(&mut self, session: u32, event: &Event) {
        if session == 0 {
            return;
        }
        let mut sessions = lock(&self.sessions);
        if !sessions.connected {
            return;
        }
        let acked = sessions
            .clients
            .get(&session)
            .is_some_and(|client| client.acked.contains_key(&event.seq));
        if !acked {
            sessions.violation.get_or_insert(format!(
                "session {session} saw event {} of sequence {} before its ack",
                event.index, event.seq
            ));
        }
    }

    fn end_of_batch(&mut self) {}
}

/// Gathers the Matcher's events into the simulated output ring.
struct OutputRing<'a> {
    slots: &'a mut Vec<OutputSlot>,
    session: u32,
    client_order_id: u64,
}

impl EventSink for OutputRing<'_> {
    fn push(&mut self, event: &Event) {
        self.slots.push(OutputSlot {
            event: *event,
            session: self.session,
            client_order_id: self.client_order_id,
        });
    }
}

/// One life of the engine, between two crashes: the real stages, and the rings between them
/// as plain vectors with a cursor per stage.
struct Node {
    journaler: Journaler<SimJournal>,
    replicator: Replicator,
    matcher: Matcher,
    publisher: Publisher<SimEventsFile>,
    responder: Responder<SimRouter>,
    writer: SnapshotWriter<SimSnapshots>,
    metrics: Arc<Metrics>,
    base_seq: u64,
    /// The input ring's commands, from `base_seq` on.
    input: Vec<InputSlot>,
    /// Commands each input stage has finished whole batches of.
    journaled_count: usize,
    replicated_count: usize,
    matched_count: usize,
    /// The output ring's events.
    output: Vec<OutputSlot>,
    published_count: usize,
    responded_count: usize,
    snapshot_requests: VecDeque<SnapshotRequest>,
}

/// Why a Journaler batch did not finish.
enum JournalStop {
    /// The machine crashed in the middle of it.
    Crashed(Crash),
    /// The journal port failed (the stage panics in production: a process crash).
    PortFailed,
}

/// The disk, the sessions and the run's randomness: what outlives a crash.
struct World {
    seed: u64,
    rng: Rng,
    plan: Plan,
    revert: Option<Revert>,
    options: Options,
    journal: Shared<JournalImage>,
    snapshots: Shared<SnapshotsImage>,
    events: Shared<EventsImage>,
    faults: Shared<Faults>,
    sessions: Shared<Sessions>,
    summary: Summary,
    step: u64,
}

/// How a run models the world beyond what the seed draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// A fix to revert.
    pub revert: Option<Revert>,
    /// Unsynced journal sectors survive a power loss each on its own, in any order, instead
    /// of as a prefix. Off by default: the journal refuses a hole followed by valid records
    /// as damage before its tail, so these runs fail (see ARCHITECTURE.md).
    pub page_reorder: bool,
}

/// Runs the simulation of `seed`, with a fix reverted if `revert` says so.
pub fn run_seed(seed: u64, revert: Option<Revert>) -> Result<Summary, Failure> {
    run_seed_with(
        seed,
        Options {
            revert,
            page_reorder: false,
        },
    )
}

/// The message a panic carried.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs the simulation of `seed` with `options`.
pub fn run_seed_with(seed: u64, options: Options) -> Result<Summary, Failure> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut world = World::new(seed, options);
        world.run()
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(Failure {
            seed,
            step: 0,
            problem: format!("panicked: {}", panic_message(&*panic)),
        }),
    }
}

impl World {
    fn new(seed: u64, options: Options) -> World {
        let revert = options.revert;
        let mut rng = Rng::new(seed);
        let plan = Plan::draw(&mut rng);
        let sessions = Sessions {
            clients: (1..=SESSIONS_COUNT)
                .map(|session| (session, Client::default()))
                .collect(),
            ack_at_submit: revert == Some(Revert::AckAtSubmit),
            ..Sessions::default()
        };
        World {
            seed,
            rng,
            plan,
            revert,
            options,
            journal: Shared::default(),
            snapshots: Shared::default(),
            events: Shared::default(),
            faults: Shared::default(),
            sessions: Arc::new(std::sync::Mutex::new(sessions)),
            summary: Summary::default(),
            step: 0,
        }
    }

    fn fail(&self, problem: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            problem,
        }
    }

    fn run(&mut self) -> Result<Summary, Failure> {
        let mut node = self.start()?;
        while self.step < self.plan.steps_count {
            self.step += 1;
            if let Some(crash) = self.step_once(&mut node) {
                drop(node);
                self.crash(crash);
                node = self.start()?;
            }
            self.check_sessions()?;
        }
        // A clean end: every stage drains, the journal and the output are synced.
        self.drain(&mut node)?;
        self.check_sessions()?;
        let journal = node.journaler.into_journal();
        let sink = node.publisher.into_sink();
        if let Some(mismatch) = &sink.mismatch {
            return Err(self.fail(mismatch.clone()));
        }
        drop((journal, sink));
        self.check_disk(None, true)?;
        let replayed = self.clean_replay().0;
        let count_of = |event_type| {
            replayed
                .iter()
                .filter(|event| event.event_type == event_type)
                .count() as u64
        };
        self.summary.resent_count = count_of(EventType::Resent);
        self.summary.triggered_count = count_of(EventType::Triggered);
        let cancelled_for = |reason| {
            replayed
                .iter()
                .filter(|event| event.reason == ringmatch_proto::Reason::Cancel(reason))
                .count() as u64
        };
        self.summary.expired_count = cancelled_for(ringmatch_proto::CancelReason::Expired);
        self.summary.oco_cancelled_count = cancelled_for(ringmatch_proto::CancelReason::Oco);
        self.summary.steps_count = self.step;
        self.summary.acks_count = lock(&self.sessions).acks_count;
        self.summary.commands_count = lock(&self.journal).records().len() as u64;
        Ok(self.summary.clone())
    }

    /// Start-up on what the disk holds: the real recovery, then the checkers, then a node.
    fn start(&mut self) -> Result<Node, Failure> {
        let journal = SimJournal::open(
            Arc::clone(&self.journal),
            Arc::clone(&self.faults),
            self.plan.durability,
        )
        .map_err(|problem| self.fail(format!("start-up failed: {problem}")))?;
        let store = SimSnapshots::new(
            Arc::clone(&self.snapshots),
            Arc::clone(&self.faults),
            self.plan.snapshots_kept_count,
            self.revert == Some(Revert::UnsyncedSnapshots),
        );
        let mut output = SimEventsFile::open(
            Arc::clone(&self.events),
            Arc::clone(&self.faults),
            ringmatch_pipeline::ports::JournalPort::next_seq(&journal),
            self.revert == Some(Revert::UnsyncedSnapshots),
        );
        let rebuilt = recover_from(
            &matcher_config(),
            &journal,
            &store,
            &mut output,
            &mut |_| {},
        )
        .map_err(|error| self.fail(format!("start-up failed: {error}")))?;
        if let Some(mismatch) = &output.mismatch {
            return Err(self.fail(mismatch.clone()));
        }
        // A crash during start-up, once the replay handed its events to the output (a crash
        // earlier in the replay leaves the disk as it was).
        if self.rng.chance(40) {
            drop((journal, store, output));
            let crash = self.draw_crash();
            self.crash(crash);
            self.summary.crashes_during_recovery_count += 1;
            return self.start();
        }
        if rebuilt.snapshot.is_some() {
            self.summary.restarts_from_snapshot_count += 1;
        }
        self.check_disk(Some(rebuilt.engine.state_hash()), false)?;
        lock(&self.sessions).connected = true;
        let base_seq = ringmatch_pipeline::ports::JournalPort::next_seq(&journal);
        let metrics = Arc::new(Metrics::new(
            INPUT_RING_SLOTS_COUNT as u64,
            base_seq,
            Arc::new(JournalStats::default()),
        ));
        let market_data = Arc::new(MarketData::from_engine(&rebuilt.engine));
        let writer = SnapshotWriter::new(store, output.durability());
        let matcher = Matcher::new(
            rebuilt.engine,
            base_seq,
            self.plan.snapshot_every_commands,
            output.last_event_position(),
        );
        Ok(Node {
            journaler: Journaler::new(journal),
            replicator: Replicator::default(),
            matcher,
            publisher: Publisher::new(output, market_data, Arc::clone(&metrics), 64),
            responder: Responder::new(Box::new(SimRouter {
                sessions: Arc::clone(&self.sessions),
            })),
            writer,
            metrics,
            base_seq,
            input: Vec::new(),
            journaled_count: 0,
            replicated_count: 0,
            matched_count: 0,
            output: Vec::new(),
            published_count: 0,
            responded_count: 0,
            snapshot_requests: VecDeque::new(),
        })
    }

    /// A crash: the sessions are gone (their unanswered commands may or may not have been
    /// taken), and the disk keeps what the crash model says.
    fn crash(&mut self, crash: Crash) {
        self.summary.crashes_count += 1;
        if crash == Crash::PowerLoss {
            self.summary.power_losses_count += 1;
        }
        {
            let mut sessions = lock(&self.sessions);
            sessions.connected = false;
            let as_new = self.revert == Some(Revert::ResendAsNew);
            for client in sessions.clients.values_mut() {
                // Unanswered places are sent again (in the order first sent: client order ids
                // grow); anything else unanswered may or may not have been taken.
                let mut places: Vec<Command> = client
                    .pending
                    .drain()
                    .map(|(_, command)| command)
                    .filter(|command| command.command_type == CommandType::Place)
                    .collect();
                places.sort_by_key(|command| command.client_order_id);
                for place in places {
                    let floor = client.floors[&place.client_order_id];
                    client.to_resend.push_back(if as_new {
                        place
                    } else {
                        place.as_resend(floor)
                    });
                }
            }
        }
        lock(&self.journal).crash(crash, &mut self.rng, self.options.page_reorder);
        lock(&self.events).crash(crash, &mut self.rng);
        *lock(&self.faults) = Faults::default();
    }

    /// The crash a run may have: under `none` only a process crash, since an ack then
    /// promises nothing across a power loss (`docs/order-entry-protocol.md`).
    fn draw_crash(&mut self) -> Crash {
        if self.plan.durability != Durability::None && self.rng.chance(500) {
            Crash::PowerLoss
        } else {
            Crash::Process
        }
    }

    /// One step, chosen by the seed; Some when the node crashed.
    fn step_once(&mut self, node: &mut Node) -> Option<Crash> {
        if self.rng.chance(self.plan.crash_per_mille) {
            return Some(self.draw_crash());
        }
        if self.rng.chance(self.plan.fault_per_mille) {
            self.arm_fault();
        }
        let outcome = match self.rng.below(100) {
            0..=29 => {
                self.submit(node);
                Ok(())
            }
            30..=44 => match self.journal_batch(node, true) {
                Err(JournalStop::Crashed(crash)) => return Some(crash),
                Err(JournalStop::PortFailed) => Err(()),
                Ok(()) => Ok(()),
            },
            45..=56 => {
                self.replicate_batch(node);
                Ok(())
            }
            57..=71 => {
                self.match_batch(node);
                Ok(())
            }
            72..=83 => self.publish_batch(node),
            84..=95 => {
                self.respond_batch(node);
                Ok(())
            }
            96..=97 => {
                self.copy_snapshot(node, false);
                Ok(())
            }
            _ => self.write_snapshot(node),
        };
        // A stage whose port fails panics in production, which ends the process.
        outcome.err().map(|()| Crash::Process)
    }

    fn arm_fault(&mut self) {
        self.summary.faults_count += 1;
        let kind = self.rng.below(6);
        if kind == 4 {
            self.flip_snapshot_sector();
            return;
        }
        let mut faults = lock(&self.faults);
        match kind {
            5 => faults.events_write_fails = true,
            0 => faults.journal_sync_fails = true,
            1 => {
                let used = lock(&self.journal).bytes.len();
                faults.journal_capacity_bytes = Some(used + self.rng.below(4) as usize * 88);
            }
            2 => faults.events_sync_fails = true,
            _ => faults.snapshot_write_fails = true,
        }
    }

    /// Media damage: one byte of a sector of a snapshot file flips. Start-up must notice it
    /// (checksums) and use an older snapshot or the journal's start.
    fn flip_snapshot_sector(&mut self) {
        let mut image = lock(&self.snapshots);
        if image.files.is_empty() {
            return;
        }
        let file = self.rng.below(image.files.len() as u64) as usize;
        let bytes = &mut image.files[file].1;
        let offset = self.rng.below(bytes.len() as u64) as usize;
        bytes[offset] ^= 1 << self.rng.below(8);
    }

    /// A session (or the admin, with a snapshot command) sends one to eight commands.
    fn submit(&mut self, node: &mut Node) {
        let session = self.rng.below(u64::from(SESSIONS_COUNT) + 1) as u32;
        let count = self.rng.between(1, 8);
        for _ in 0..count {
            let in_flight = node.input.len() - node.matched_count;
            let command = match self.next_resend(session) {
                Some(resend) => resend,
                None => self.draw_command(session),
            };
            if in_flight >= INPUT_RING_SLOTS_COUNT {
                // `busy`: the command was not taken; the client forgets it.
                if session != 0 {
                    let mut sessions = lock(&self.sessions);
                    if let Some(client) = sessions.clients.get_mut(&session) {
                        client.pending.remove(&command.client_order_id);
                    }
                }
                continue;
            }
            let seq = node.base_seq + node.input.len() as u64;
            node.input.push(InputSlot { command, session });
            let mut sessions = lock(&self.sessions);
            if session != 0 && sessions.ack_at_submit {
                sessions.record_ack(session, command.client_order_id, seq);
            }
        }
    }

    /// The session's next place to send again after a crash, if any, taken as in flight.
    fn next_resend(&mut self, session: u32) -> Option<Command> {
        let mut sessions = lock(&self.sessions);
        let client = sessions.clients.get_mut(&session)?;
        let resend = client.to_resend.pop_front()?;
        client.pending.insert(resend.client_order_id, resend);
        self.summary.resends_count += 1;
        Some(resend)
    }

    fn draw_command(&mut self, session: u32) -> Command {
        let timestamp_ns = 1_000_000 + self.step * 1_000;
        if session == 0 {
            // The admin's snapshots, and the engine clock's time commands.
            let command_type = if self.rng.chance(500) {
                CommandType::Time
            } else {
                CommandType::Snapshot
            };
            let mut command = Command::empty(command_type);
            command.timestamp_ns = timestamp_ns;
            return command;
        }
        let account = session;
        let mut sessions = lock(&self.sessions);
        let client = sessions.clients.get_mut(&session).expect("a known session");
        client.next_client_order_id += 1;
        let mut client_order_id = client.next_client_order_id;
        let side = if self.rng.chance(500) {
            Side::Buy
        } else {
            Side::Sell
        };
        let mut command = match self.rng.below(10) {
            0..=5 => {
                let mut command = Command::limit(
                    account,
                    1,
                    side,
                    self.rng.between(95, 105) as i64,
                    self.rng.between(1, 5),
                );
                // Some are icebergs, showing one lot at a time.
                if command.qty > 1 && self.rng.chance(100) {
                    command.display_qty = 1;
                }
                // Some are good for a few dozen steps only.
                if self.rng.chance(100) {
                    command.tif = TimeInForce::Gtd;
                    command.expire_time_ns = timestamp_ns + self.rng.between(1_000, 50_000);
                }
                // Every eleventh is an OCO, its stop leg six ticks on the other side (refused
                // when the last trade price is not between the two).
                if client_order_id % 11 == 0 {
                    command.oco = true;
                    command.stop_price = match side {
                        Side::Buy => command.price + 6,
                        Side::Sell => command.price - 6,
                    };
                }
                command
            }
            6 => {
                let mut command = Command::limit(account, 1, side, 0, self.rng.between(1, 5));
                command.kind = OrderKind::Market;
                command.tif = TimeInForce::Ioc;
                // Half of them are stops instead, which wait for a trade at their stop price
                // (or are refused when the last trade already reached it).
                if self.rng.chance(500) {
                    command.stop_price = self.rng.between(95, 105) as i64;
                    command.kind = OrderKind::StopMarket;
                    if self.rng.chance(500) {
                        command.kind = OrderKind::StopLimit;
                        command.tif = TimeInForce::Gtc;
                        command.price = self.rng.between(95, 105) as i64;
                    }
                }
                command
            }
            7 | 8 if !client.live.is_empty() => {
                let index = self.rng.below(client.live.len() as u64) as usize;
                // A cancel names its order by the order's client order id (the ack carries it).
                client_order_id = client.live.swap_remove(index);
                let mut command = Command::empty(CommandType::Cancel);
                command.account = account;
                command.instrument = 1;
                command
            }
            _ => {
                let mut command = Command::empty(CommandType::OpenOrders);
                command.account = account;
                command.instrument = 1;
                command
            }
        };
        command.client_order_id = client_order_id;
        command.timestamp_ns = timestamp_ns;
        client.pending.insert(client_order_id, command);
        if command.command_type == CommandType::Place {
            client
                .floors
                .insert(client_order_id, client.highest_acked_seq);
        }
        command
    }

    /// The Journaler takes a batch: what was submitted and not yet journaled, or part of it.
    /// A batch of a seed-chosen size (at least one) of what a stage has not taken yet: the
    /// indices from `done` to at most `available`; None when nothing waits.
    fn draw_batch(&mut self, done: usize, available: usize) -> Option<std::ops::Range<usize>> {
        let waiting = available - done;
        (waiting > 0).then(|| done..done + self.rng.between(1, waiting as u64) as usize)
    }

    /// The Journaler takes a batch. When `may_crash`, the machine may crash in the middle of
    /// it, after some appends and before the batch's sync, when what the batch wrote is
    /// unsynced.
    fn journal_batch(&mut self, node: &mut Node, may_crash: bool) -> Result<(), JournalStop> {
        let Some(batch) = self.draw_batch(node.journaled_count, node.input.len()) else {
            return Ok(());
        };
        let crash_after = (may_crash && self.rng.chance(self.plan.crash_per_mille * 2))
            .then(|| self.rng.between(1, batch.len() as u64) as usize);
        for (appended, index) in batch.clone().enumerate() {
            if crash_after == Some(appended) {
                return Err(JournalStop::Crashed(self.draw_crash()));
            }
            let seq = node.base_seq + index as u64;
            node.journaler
                .on_command(seq, &node.input[index].command)
                .map_err(|_| JournalStop::PortFailed)?;
        }
        if crash_after == Some(batch.len()) {
            return Err(JournalStop::Crashed(self.draw_crash()));
        }
        node.journaler
            .end_of_batch()
            .map_err(|_| JournalStop::PortFailed)?;
        node.journaled_count = batch.end;
        Ok(())
    }

    fn replicate_batch(&mut self, node: &mut Node) {
        let Some(batch) = self.draw_batch(node.replicated_count, node.input.len()) else {
            return;
        };
        for index in batch.clone() {
            let seq = node.base_seq + index as u64;
            node.replicator.on_command(seq, &node.input[index].command);
        }
        node.replicator
            .end_of_batch()
            .expect("the Replicator passes every command on");
        node.replicated_count = batch.end;
    }

    /// The Matcher takes a batch of what both the Journaler and the Replicator finished.
    fn match_batch(&mut self, node: &mut Node) {
        let ready = node.journaled_count.min(node.replicated_count);
        let Some(batch) = self.draw_batch(node.matched_count, ready) else {
            return;
        };
        for index in batch.clone() {
            let seq = node.base_seq + index as u64;
            let slot = node.input[index];
            let mut ring = OutputRing {
                slots: &mut node.output,
                session: slot.session,
                client_order_id: slot.command.client_order_id,
            };
            if node.matcher.on_command(seq, &slot.command, &mut ring) {
                // Skipped while the last one is still being copied (a later one covers it).
                node.matcher.begin_snapshot();
            } else if self.rng.chance(300) {
                // The Matcher copies some of a snapshot between commands.
                self.copy_snapshot(node, false);
            }
        }
        node.matched_count = batch.end;
    }

    /// One step of the copy of a snapshot under way (with a budget from one page to
    /// everything; `all`: everything); a finished copy is encoded and queued for the writer,
    /// or skipped when the writer already has its fill.
    fn copy_snapshot(&mut self, node: &mut Node, all: bool) {
        let budget_bytes = if all {
            usize::MAX
        } else {
            [0, 4_096, 65_536, usize::MAX][self.rng.below(4) as usize]
        };
        let Some(snapshot) = node.matcher.snapshot_step(budget_bytes) else {
            return;
        };
        let (request, state) = snapshot.encode();
        node.matcher.give_back(state);
        if node.snapshot_requests.len() < SNAPSHOTS_QUEUED_MAX {
            node.snapshot_requests.push_back(request);
        }
    }

    /// The Publisher takes a batch. An output that fails (a write error) ends the process,
    /// as the real sinks do by panicking.
    fn publish_batch(&mut self, node: &mut Node) -> Result<(), ()> {
        let Some(batch) = self.draw_batch(node.published_count, node.output.len()) else {
            return Ok(());
        };
        if std::mem::take(&mut lock(&self.faults).events_write_fails) {
            return Err(());
        }
        for index in batch.clone() {
            node.publisher.on_event(&node.output[index].event);
        }
        node.publisher.end_of_batch();
        node.published_count = batch.end;
        Ok(())
    }

    fn respond_batch(&mut self, node: &mut Node) {
        let Some(batch) = self.draw_batch(node.responded_count, node.output.len()) else {
            return;
        };
        for index in batch.clone() {
            node.responder.on_slot(&node.output[index]);
        }
        node.responder.end_of_batch();
        node.responded_count = batch.end;
    }

    /// The snapshot writer takes the oldest request, if the output holds its events yet.
    fn write_snapshot(&mut self, node: &mut Node) -> Result<(), ()> {
        let Some(request) = node.snapshot_requests.front() else {
            return Ok(());
        };
        if !node.writer.ready(request, &node.metrics) {
            return Ok(());
        }
        // A crash while the file is written leaves no file under its name (it is renamed
        // into place only once synced).
        if self.rng.chance(50) {
            return Err(());
        }
        let request = node
            .snapshot_requests
            .pop_front()
            .expect("a request was there");
        match node.writer.write(&request) {
            Written::Done { .. } => self.summary.snapshots_count += 1,
            Written::OutputNotDurable(_) | Written::Failed(_) => {}
        }
        Ok(())
    }

    /// Runs every stage until nothing is left to do (faults off), then the clean stop's
    /// syncs.
    fn drain(&mut self, node: &mut Node) -> Result<(), Failure> {
        *lock(&self.faults) = Faults::default();
        loop {
            let before = (
                node.journaled_count,
                node.replicated_count,
                node.matched_count,
                node.published_count,
                node.responded_count,
                node.snapshot_requests.len(),
                node.matcher.snapshot_copying(),
            );
            self.journal_batch(node, false)
                .map_err(|_| self.fail("the journal failed without a fault".into()))?;
            self.replicate_batch(node);
            self.match_batch(node);
            self.publish_batch(node)
                .map_err(|()| self.fail("the output failed without a fault".into()))?;
            self.respond_batch(node);
            self.copy_snapshot(node, true);
            if let Some(request) = node.snapshot_requests.pop_front() {
                if node.writer.ready(&request, &node.metrics) {
                    if let Written::Done { .. } = node.writer.write(&request) {
                        self.summary.snapshots_count += 1;
                    }
                } else {
                    node.snapshot_requests.push_front(request);
                }
            }
            let after = (
                node.journaled_count,
                node.replicated_count,
                node.matched_count,
                node.published_count,
                node.responded_count,
                node.snapshot_requests.len(),
                node.matcher.snapshot_copying(),
            );
            if after == before {
                break;
            }
        }
        // A clean stop syncs the journal and leaves the events file on disk.
        let mut image = lock(&self.journal);
        image.synced_len = image.bytes.len();
        drop(image);
        let mut events = lock(&self.events);
        events.synced_count = events.records.len();
        Ok(())
    }

    /// A clean replay of the journal on disk: its events and final state hash.
    fn clean_replay(&self) -> (Vec<Event>, u64) {
        struct Collect(Vec<Event>);
        impl EventSink for Collect {
            fn push(&mut self, event: &Event) {
                self.0.push(*event);
            }
        }
        let mut engine = Engine::new(matcher_config()).expect("a valid configuration");
        let mut events = Collect(Vec::new());
        for record in lock(&self.journal).records() {
            engine.apply(record.seq, &record.command, &mut events);
        }
        (events.0, engine.state_hash())
    }

    /// Checkers 1 to 3, on the disk after a start-up (`recovered_hash`) or at the end.
    fn check_disk(&self, recovered_hash: Option<u64>, at_end: bool) -> Result<(), Failure> {
        let records = lock(&self.journal).records();
        for (seq, command) in &lock(&self.sessions).acks {
            let Some(record) = records.get((*seq - 1) as usize) else {
                return Err(self.fail(format!(
                    "acknowledged sequence {seq} is not in the journal (it ends at {})",
                    records.len()
                )));
            };
            if record.command != *command {
                return Err(self.fail(format!(
                    "sequence {seq} was acknowledged for {command:?} but the journal holds \
                     {:?} under it",
                    record.command
                )));
            }
        }
        let (expected, clean_hash) = self.clean_replay();
        let held = &lock(&self.events).records;
        if let Some(index) = (0..held.len().min(expected.len())).find(|&i| held[i] != expected[i]) {
            return Err(self.fail(format!(
                "the events file differs from a clean replay at record {index}: it holds \
                 (seq {}, index {}) where the replay has (seq {}, index {}){}",
                held[index].seq,
                held[index].index,
                expected[index].seq,
                expected[index].index,
                if held[index].seq > expected[index].seq {
                    " (a gap)"
                } else {
                    " (a double)"
                }
            )));
        }
        if held.len() != expected.len() {
            return Err(self.fail(format!(
                "the events file holds {} events {}, a clean replay {}",
                held.len(),
                if at_end {
                    "after a clean stop"
                } else {
                    "after start-up"
                },
                expected.len()
            )));
        }
        self.check_orders_once(&records, &expected)?;
        if let Some(hash) = recovered_hash {
            if hash != clean_hash {
                return Err(self.fail(format!(
                    "the recovered state hash {hash:#018x} differs from a clean replay's \
                     {clean_hash:#018x}"
                )));
            }
        }
        Ok(())
    }

    /// Checker 5: no (account, client order id) accepted twice (the sessions never reuse a
    /// client order id for a new place), and every `resent` names a journaled place of the
    /// same order.
    fn check_orders_once(
        &self,
        records: &[ringmatch_journal::JournalRecord],
        events: &[Event],
    ) -> Result<(), Failure> {
        let mut accepted_at = HashMap::new();
        for (position, event) in events.iter().enumerate() {
            let key = (event.account, event.client_order_id);
            match event.event_type {
                // An OCO's stop leg has no client order id: it is the same place as the limit
                // leg accepted just before it.
                EventType::Accepted if event.oco_leg == Some(ringmatch_proto::OcoLeg::Stop) => {
                    let limit_leg = position.checked_sub(1).map(|before| &events[before]);
                    if !limit_leg.is_some_and(|limit_leg| {
                        limit_leg.event_type == EventType::Accepted
                            && limit_leg.seq == event.seq
                            && limit_leg.oco_leg == Some(ringmatch_proto::OcoLeg::Limit)
                            && limit_leg.order_id + 1 == event.order_id
                    }) {
                        return Err(self.fail(format!(
                            "OCO stop leg {} accepted at sequence {} without its limit leg",
                            event.order_id, event.seq
                        )));
                    }
                }
                EventType::Accepted => {
                    if let Some(first) = accepted_at.insert(key, event.seq) {
                        return Err(self.fail(format!(
                            "client order id {} of account {} was placed twice: accepted at \
                             sequence {first} and again at {}",
                            key.1, key.0, event.seq
                        )));
                    }
                }
                EventType::Resent => {
                    let original = records
                        .get((event.original_seq.max(1) - 1) as usize)
                        .map(|record| record.command);
                    if !original.is_some_and(|command| {
                        command.command_type == CommandType::Place
                            && (command.account, command.client_order_id) == key
                    }) {
                        return Err(self.fail(format!(
                            "the resend at sequence {} names sequence {}, which holds {original:?}",
                            event.seq, event.original_seq
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checker 4, and the sessions' other rules.
    fn check_sessions(&self) -> Result<(), Failure> {
        match &lock(&self.sessions).violation {
            Some(violation) => Err(self.fail(violation.clone())),
            None => Ok(()),
        }
    }
}

/// Runs `count` seeds from `first_seed`; the failures, in seed order.
pub fn run_seeds(first_seed: u64, count: u64, revert: Option<Revert>) -> Vec<Failure> {
    (first_seed..first_seed + count)
        .filter_map(|seed| run_seed(seed, revert).err())
        .collect()
}
