//! The ring-buffer pipeline of ringmatch, built on the `disruptor` crate.
//!
//! ```text
//!  producers (admin, bench, gateway) ─▶ INPUT RING ─┬─▶ Journaler  (append, group commit)
//!                                                   └─▶ Replicator (mode `none`: pass on)
//!                                                          │ both done
//!                                                          ▼
//!                                                       Matcher ─▶ OUTPUT RING ─▶ Publisher
//!                                                          │                     (events file)
//!                                                          └─▶ snapshot writer thread
//! ```
//!
//! Every command gets its sequence from its input-ring slot (`base_seq + ring sequence`). The
//! Journaler and the Replicator see each command in parallel; the Matcher sees a command only
//! after both have finished its whole batch, so under the `batch` policy every command is on
//! disk (one sync per batch) before it is matched. The Matcher writes events into the output
//! ring, read by the Publisher. A snapshot command is journaled like any other and makes the
//! Matcher encode its state after exactly the commands before it; a separate thread
//! compresses and writes the file, so the Matcher pauses only for the encoding.
//!
//! Start-up ([`recover`]) loads the newest valid snapshot, replays the journal after it through
//! the matcher, and lets the output sink skip what it already holds, before the rings start.
//!
//! This crate knows the rings, stages, threads and files of the engine, but nothing of the
//! wire formats of Kafka or TCP, nor of configuration files or the command line.

mod baseline;
mod events_file;
mod market_data;
mod metrics;
mod recovery;
mod wait;

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use disruptor::{
    build_multi_producer, build_single_producer, MultiProducer, ProcessorSettings, Producer,
    SingleConsumerBarrier, SingleProducer,
};
use ringmatch_journal::{Journal, JournalRecord, SnapshotStore};
use ringmatch_matcher::{Engine, EventSink};
use ringmatch_proto::{Command, CommandType, Event};

pub use baseline::{CrossbeamPipeline, CrossbeamSubmitter};
pub use events_file::{
    read_events, EventPosition, EventsFile, EventsFileError, EventsFileReport, EVENTS_FILE_VERSION,
    EVENTS_HEADER_SIZE_BYTES, EVENTS_MAGIC,
};
pub use market_data::{L2Book, MarketData};
pub use metrics::{new_histogram, now_ns, Metrics, Stage, StageRecorder};
pub use recovery::{
    recover, recover_with, snapshot_fits_output, Recovered, RecoveryError, RecoveryOptions,
    ReplayProgress, ResumableOutput,
};
pub use ringmatch_journal::EventsMark;
pub use wait::{
    single_core_waits_count, tighten_timer_slack, ConfiguredWait, Signal, WaitKind, PHASED_SLEEP,
};

/// A slot of the input ring.
#[derive(Debug, Clone, Copy)]
pub struct InputSlot {
    /// The command, with its ingress timestamp.
    pub command: Command,
    /// The order-entry session it came from (0: none). Not journaled: it only routes the
    /// command's events back.
    pub session: u32,
}

/// A slot of the output ring.
#[derive(Debug, Clone, Copy)]
pub struct OutputSlot {
    /// One event.
    pub event: Event,
    /// The session whose command caused it (0: none, or a replayed command).
    pub session: u32,
    /// The client order id of the command that caused it, as the session sent it (a cancel's
    /// events carry the cancelled order's ids): the Responder acknowledges the command with it.
    pub client_order_id: u64,
}

/// Cores to pin stage threads to (None: not pinned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCores {
    /// The Journaler's core.
    pub journaler: Option<usize>,
    /// The Replicator's core.
    pub replicator: Option<usize>,
    /// The Matcher's core.
    pub matcher: Option<usize>,
    /// The Publisher's core.
    pub publisher: Option<usize>,
    /// The Responder's core.
    pub responder: Option<usize>,
}

/// What the journal does with segments wholly before the oldest kept snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// Keep every segment.
    Keep,
    /// Delete them.
    Delete,
    /// Move them to this folder.
    Archive(PathBuf),
}

/// Shape of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Slots of the input ring (a power of two).
    pub input_ring_slots_count: usize,
    /// Slots of the output ring (a power of two).
    pub output_ring_slots_count: usize,
    /// How idle stages wait.
    pub wait: WaitKind,
    /// Core pinning.
    pub cores: StageCores,
    /// Take a snapshot after every this many commands (0: never by count).
    pub snapshot_every_commands: u64,
    /// Journal segments retention.
    pub retention: Retention,
    /// Fault injection for tests: the Matcher panics on reaching this sequence.
    pub matcher_panic_at_seq: Option<u64>,
}

/// Configuration problems found before any thread starts.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A ring size is not a power of two, or too small.
    #[error("{name} = {value} must be a power of two, at least {minimum}")]
    RingSize {
        /// Which ring.
        name: &'static str,
        /// Its size.
        value: usize,
        /// The smallest size allowed.
        minimum: usize,
    },
    /// A core id that this machine does not have.
    #[error("cannot pin the {stage} to core {core}: this machine has cores {available:?}")]
    BadCore {
        /// Which stage.
        stage: &'static str,
        /// The id asked for.
        core: usize,
        /// The ids that exist.
        available: Vec<usize>,
    },
    /// An empty list of cores.
    #[error("{what} lists no cores")]
    NoCores {
        /// Which setting.
        what: &'static str,
    },
    /// The operating system refused to restrict the thread to the cores.
    #[error("cannot restrict the {what} to cores {cores:?}: {source}")]
    Affinity {
        /// Which setting.
        what: &'static str,
        /// The ids asked for.
        cores: Vec<usize>,
        /// The refusal.
        source: std::io::Error,
    },
}

/// The core ids of this machine that are online, as the operating system numbers them
/// (`/sys/devices/system/cpu/online`), whatever cores the calling thread is restricted to.
/// Where that file cannot be read: the cores the calling thread may run on.
pub fn available_cores() -> Vec<usize> {
    if let Some(cores) = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| parse_core_list(text.trim()))
    {
        return cores;
    }
    allowed_cores()
}

/// The cores the calling thread may run on now (its affinity), as the operating system
/// numbers them.
pub fn allowed_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|core| core.id)
        .collect()
}

/// Parses the kernel's list format: `0-3,6,8-9`.
fn parse_core_list(text: &str) -> Option<Vec<usize>> {
    let mut cores = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => cores.extend(first.parse::<usize>().ok()?..=last.parse().ok()?),
            None => cores.push(part.parse().ok()?),
        }
    }
    (!cores.is_empty()).then_some(cores)
}

/// Checks that `cores` is a non-empty list of [`available_cores`]; `what` names the setting in
/// errors.
pub fn check_cores(what: &'static str, cores: &[usize]) -> Result<(), PipelineError> {
    if cores.is_empty() {
        return Err(PipelineError::NoCores { what });
    }
    let available = available_cores();
    if let Some(&core) = cores.iter().find(|core| !available.contains(core)) {
        return Err(PipelineError::BadCore {
            stage: what,
            core,
            available,
        });
    }
    Ok(())
}

/// Restricts the calling thread to `cores`; every thread it starts afterwards inherits the
/// restriction (a stage with a core of its own in [`StageCores`] is pinned there instead).
/// `what` names the setting in errors. Ids are checked against [`available_cores`] first.
pub fn restrict_thread_to_cores(what: &'static str, cores: &[usize]) -> Result<(), PipelineError> {
    check_cores(what, cores)?;
    #[allow(unsafe_code)]
    // SAFETY: `set` is a plain bit set owned by this frame; ids were checked to be cores this
    // machine has, all below CPU_SETSIZE.
    let result = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if result != 0 {
        return Err(PipelineError::Affinity {
            what,
            cores: cores.to_vec(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

impl PipelineConfig {
    /// Checks ring sizes and core ids (against the machine's online cores).
    pub fn validate(&self) -> Result<(), PipelineError> {
        // The multi-producer ring of `disruptor` needs at least 64 slots.
        for (name, value, minimum) in [
            ("input_ring_slots", self.input_ring_slots_count, 64),
            ("output_ring_slots", self.output_ring_slots_count, 2),
        ] {
            if value < minimum || !value.is_power_of_two() {
                return Err(PipelineError::RingSize {
                    name,
                    value,
                    minimum,
                });
            }
        }
        let available = available_cores();
        let cores = self.cores;
        for (stage, core) in [
            ("journaler", cores.journaler),
            ("replicator", cores.replicator),
            ("matcher", cores.matcher),
            ("publisher", cores.publisher),
            ("responder", cores.responder),
        ] {
            if let Some(core) = core {
                if !available.contains(&core) {
                    return Err(PipelineError::BadCore {
                        stage,
                        core,
                        available,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Where the Publisher puts events. Errors are fatal: implementations panic with the cause.
///
/// A snapshot file is written only once the output durably holds every event of the commands
/// before it, so start-up can replay from any snapshot into the output; each sink says how
/// its events become durable ([`OutputSink::durability`]).
pub trait OutputSink: Send + 'static {
    /// One event, in (sequence, index) order.
    fn push(&mut self, event: &Event);
    /// The end of a ring batch: flush.
    fn end_of_batch(&mut self);
    /// How the events handed over become durable.
    fn durability(&self) -> OutputDurability;
    /// The position of the last event of the stream so far: the newest one pushed (skipped or
    /// taken) or held from before. After start-up's replay that is the last event of every
    /// command the journal holds; the Matcher goes on from it and records, in each snapshot,
    /// the last event before it (`docs/snapshot-format.md`).
    fn last_event_position(&self) -> Option<EventPosition>;
}

/// Makes every event handed to the operating system so far durable (a file sync).
pub type OutputSync = Box<dyn FnMut() -> std::io::Result<()> + Send>;

/// How a sink's events become durable, which the snapshot writer waits for.
pub enum OutputDurability {
    /// Once their batch ended: a sink that keeps nothing across a restart (benchmarks).
    AtEndOfBatch,
    /// Handed to the operating system at the end of their batch, durable once this sync
    /// returns (the events file): the snapshot writer syncs before it writes a snapshot.
    Synced(OutputSync),
    /// The sink's own counter of durable events (Kafka commits on its own thread), which had
    /// counted `base` replayed events at start.
    Counter {
        /// Events taken (pushed and not skipped) that are durable, replayed ones included.
        counter: Arc<AtomicU64>,
        /// The counter's value once start-up's replay was taken.
        base: u64,
    },
}

impl OutputDurability {
    /// Waits until the output durably holds `live_events_count` live events (those the
    /// Publisher counted in `Metrics::events_written`). Err: the sync failed.
    fn wait_durable(
        &mut self,
        metrics: &Metrics,
        live_events_count: u64,
        mut waited: impl FnMut(),
    ) -> std::io::Result<()> {
        let durable = |durability: &OutputDurability| match durability {
            OutputDurability::AtEndOfBatch | OutputDurability::Synced(_) => {
                metrics.events_written.load(Ordering::Acquire)
            }
            OutputDurability::Counter { counter, base } => {
                counter.load(Ordering::Acquire).saturating_sub(*base)
            }
        };
        while durable(self) < live_events_count {
            waited();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        match self {
            // The Publisher counts events once `end_of_batch` handed them over: a sync now
            // makes them durable.
            OutputDurability::Synced(sync) => sync(),
            OutputDurability::AtEndOfBatch | OutputDurability::Counter { .. } => Ok(()),
        }
    }
}

impl OutputSink for EventsFile {
    fn push(&mut self, event: &Event) {
        if let Err(error) = EventsFile::push(self, event) {
            panic!("events file write failed: {error}");
        }
    }

    fn end_of_batch(&mut self) {
        if let Err(error) = self.flush() {
            panic!("events file write failed: {error}");
        }
    }

    fn durability(&self) -> OutputDurability {
        match self.sync_handle() {
            Ok(file) => OutputDurability::Synced(Box::new(move || file.sync_data())),
            Err(error) => panic!("events file: cannot open a handle to sync it: {error}"),
        }
    }

    fn last_event_position(&self) -> Option<EventPosition> {
        EventsFile::last_event_position(self)
    }
}

/// An output sink that only counts events (for benchmarks of the pipeline without the events
/// file).
#[derive(Debug, Default)]
pub struct NullSink {
    /// Events seen.
    pub events_count: u64,
    /// The last one.
    pub last_event: Option<EventPosition>,
}

impl OutputSink for NullSink {
    fn push(&mut self, event: &Event) {
        self.events_count += 1;
        self.last_event = Some((event.seq, event.index));
    }

    fn end_of_batch(&mut self) {}

    fn durability(&self) -> OutputDurability {
        OutputDurability::AtEndOfBatch
    }

    fn last_event_position(&self) -> Option<EventPosition> {
        self.last_event
    }
}

/// The input ring was full: the command was not taken. Try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("busy: the input ring is full")]
pub struct Busy;

type InputProducer = MultiProducer<InputSlot, SingleConsumerBarrier>;
/// The output ring's producer: one consumer (the Publisher), or two (Publisher and Responder).
enum OutputProducer {
    Publisher(SingleProducer<OutputSlot, SingleConsumerBarrier>),
    PublisherAndResponder(SingleProducer<OutputSlot, disruptor::MultiConsumerBarrier>),
}

impl OutputProducer {
    fn try_publish_all(&mut self, session: u32, client_order_id: u64, events: &[Event]) -> bool {
        // The batch iterator type of `disruptor` is not exported, so each arm has its closure.
        match self {
            OutputProducer::Publisher(producer) => producer
                .try_batch_publish(events.len(), |slots| {
                    for (slot, event) in slots.zip(events) {
                        slot.event = *event;
                        slot.session = session;
                        slot.client_order_id = client_order_id;
                    }
                })
                .is_ok(),
            OutputProducer::PublisherAndResponder(producer) => producer
                .try_batch_publish(events.len(), |slots| {
                    for (slot, event) in slots.zip(events) {
                        slot.event = *event;
                        slot.session = session;
                        slot.client_order_id = client_order_id;
                    }
                })
                .is_ok(),
        }
    }
}

/// Where the Responder sends events: the order-entry sessions. Runs on its own stage thread,
/// beside the Publisher, on the output ring. Every event in the output ring is durable under
/// the journal's policy (the Matcher runs a command only after the Journaler has it), so the
/// Responder is where a command is acknowledged: before its first event (index 0), to the
/// session that sent it.
pub trait EventRouter: Send + 'static {
    /// One event, with the session (0: none) and client order id of the command that caused it.
    fn route(&mut self, slot: &OutputSlot);
    /// The end of a ring batch.
    fn end_of_batch(&mut self);
}

/// A handle that puts commands on the input ring. Cloneable; every clone must be dropped
/// (or the pipeline shut down) for the pipeline to stop.
pub struct Submitter {
    producer: InputProducer,
    base_seq: u64,
    metrics: Arc<Metrics>,
    /// Wakes the Journaler and Replicator when they are parked.
    published: Arc<Signal>,
}

impl Clone for Submitter {
    fn clone(&self) -> Self {
        Submitter {
            producer: self.producer.clone(),
            base_seq: self.base_seq,
            metrics: Arc::clone(&self.metrics),
            published: Arc::clone(&self.published),
        }
    }
}

impl Submitter {
    /// Puts one command on the ring; returns its sequence, or [`Busy`] if the ring is full.
    pub fn try_submit(&mut self, command: &Command) -> Result<u64, Busy> {
        self.try_submit_from(0, command)
    }

    /// Puts `commands` (at least one) from `session` on the ring with one claim, so they are
    /// published together and the stages are notified once: all of them or, when the ring
    /// lacks room for all, none ([`Busy`]). Returns the sequence of the last one; the others
    /// have the sequences just before it, in order.
    pub fn try_submit_batch_from(
        &mut self,
        session: u32,
        commands: &[Command],
    ) -> Result<u64, Busy> {
        assert!(!commands.is_empty(), "a batch holds at least one command");
        let published = self.producer.try_batch_publish(commands.len(), |slots| {
            for (slot, command) in slots.zip(commands) {
                slot.command = *command;
                slot.session = session;
            }
        });
        self.settle(published.ok())
    }

    /// Puts one command from an order-entry session on the ring.
    pub fn try_submit_from(&mut self, session: u32, command: &Command) -> Result<u64, Busy> {
        let published = self.producer.try_publish(|slot| {
            slot.command = *command;
            slot.session = session;
        });
        self.settle(published.ok())
    }

    /// After a publish ending at ring sequence `last_ring_seq` (None: the ring was full):
    /// wakes the stages and counts it, or counts the refusal.
    fn settle(&mut self, last_ring_seq: Option<i64>) -> Result<u64, Busy> {
        let Some(last_ring_seq) = last_ring_seq else {
            self.metrics.busy_count.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        };
        self.published.notify_from_submitter();
        let seq = self.base_seq + last_ring_seq as u64;
        self.metrics
            .input_published_seq
            .fetch_max(seq, Ordering::Relaxed);
        Ok(seq)
    }
}

/// A request from the Matcher to the snapshot writer.
struct SnapshotRequest {
    seq: u64,
    state: Vec<u8>,
    /// Live events the Matcher had emitted up to and including command `seq`: the file is
    /// written once the output durably holds that many.
    events_before: u64,
    /// The last event of the stream up to and including command `seq`.
    last_event: Option<EventPosition>,
}

/// The running pipeline.
pub struct Pipeline {
    submitter: Option<Submitter>,
    metrics: Arc<Metrics>,
    market_data: Arc<MarketData>,
    snapshot_writer: Option<JoinHandle<()>>,
}

/// Events of one command gathered before they go into the output ring in one batch claim, so
/// the Publisher sees a command's events together and the ring's cursor moves once.
const OUTPUT_CHUNK_EVENTS_MAX: usize = 256;
/// Within a long batch, the Matcher wakes the output stages at least this often.
const OUTPUT_NOTIFY_EVERY_COMMANDS: u32 = 32;

/// Collects matcher events and publishes them into the output ring in batches, waiting (spin,
/// yield, sleep) while the ring is full. Its buffer is allocated once, at start.
struct RingSink<'a> {
    producer: &'a mut OutputProducer,
    session: u32,
    client_order_id: u64,
    pending: &'a mut Vec<Event>,
    chunk_max: usize,
    events_count: &'a mut u64,
    last_event: &'a mut Option<EventPosition>,
}

impl RingSink<'_> {
    fn flush(&mut self) {
        let count = self.pending.len();
        if count == 0 {
            return;
        }
        let mut polls = 0u32;
        loop {
            if self
                .producer
                .try_publish_all(self.session, self.client_order_id, self.pending)
            {
                break;
            }
            polls += 1;
            if polls < 100 {
                std::hint::spin_loop();
            } else if polls < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        }
        self.pending.clear();
    }
}

impl EventSink for RingSink<'_> {
    #[inline]
    fn push(&mut self, event: &Event) {
        if self.pending.len() == self.chunk_max {
            self.flush();
        }
        *self.events_count += 1;
        *self.last_event = Some((event.seq, event.index));
        self.pending.push(*event);
    }
}

struct MatcherState {
    engine: Engine,
    output: OutputProducer,
    recorder: StageRecorder,
    snapshots: Option<crossbeam_channel::Sender<SnapshotRequest>>,
    snapshot_every_commands: u64,
    base_seq: u64,
    metrics: Arc<Metrics>,
    panic_at_seq: Option<u64>,
    batch_timestamps_ns: Vec<u64>,
    pending_events: Vec<Event>,
    output_chunk_max: usize,
    events_count: u64,
    /// The last event of the stream so far (from the output at start, then the Matcher's).
    last_event: Option<EventPosition>,
    /// Wakes the Publisher and Responder when they are parked.
    output_published: Arc<Signal>,
    /// Commands whose events were published since the last notify.
    unannounced_commands: u32,
}

impl MatcherState {
    fn handle(&mut self, slot: &InputSlot, ring_seq: i64, end_of_batch: bool) {
        let seq = self.base_seq + ring_seq as u64;
        if self.panic_at_seq == Some(seq) {
            panic!("injected fault: the matcher panics at sequence {seq}");
        }
        let command = &slot.command;
        let mut sink = RingSink {
            producer: &mut self.output,
            session: slot.session,
            client_order_id: command.client_order_id,
            pending: &mut self.pending_events,
            chunk_max: self.output_chunk_max,
            events_count: &mut self.events_count,
            last_event: &mut self.last_event,
        };
        self.engine.apply(seq, command, &mut sink);
        sink.flush();
        // Wake a parked Publisher and Responder at the end of each batch, and every few
        // commands within a long one (a notify is an atomic add on a shared line; per command
        // it cost the Matcher measurable time flat out).
        self.unannounced_commands += 1;
        if end_of_batch || self.unannounced_commands >= OUTPUT_NOTIFY_EVERY_COMMANDS {
            self.output_published.notify();
            self.unannounced_commands = 0;
        }
        let by_count = self.snapshot_every_commands != 0 && seq % self.snapshot_every_commands == 0;
        if command.command_type == CommandType::Snapshot || by_count {
            self.snapshot(seq);
        }
        // One clock read per batch: the batch is handed on when the stage finishes it.
        self.batch_timestamps_ns.push(command.timestamp_ns);
        if end_of_batch {
            let now = now_ns();
            for timestamp_ns in self.batch_timestamps_ns.drain(..) {
                self.recorder.record(timestamp_ns, now);
            }
            self.recorder.done(seq, true);
        }
    }

    fn snapshot(&mut self, seq: u64) {
        let Some(sender) = &self.snapshots else {
            return;
        };
        let started = Instant::now();
        let state = self.engine.encode_state();
        let pause_ns = started.elapsed().as_nanos() as u64;
        if let Ok(mut pauses) = self.metrics.snapshot_pause.lock() {
            pauses.saturating_record(pause_ns.max(1));
        }
        // The Matcher never waits for the writer: when the writer is behind (it waits for the
        // output to hold the events before each snapshot, and the output may be waiting for
        // its broker), this snapshot is skipped and counted. A later one covers it.
        match sender.try_send(SnapshotRequest {
            seq,
            state,
            events_before: self.events_count,
            last_event: self.last_event,
        }) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                self.metrics
                    .snapshots_skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
            // The writer thread only stops when the pipeline does.
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                panic!("the snapshot writer stopped")
            }
        }
    }
}

struct JournalerState {
    journal: Journal,
    recorder: StageRecorder,
    batch_timestamps_ns: Vec<u64>,
    base_seq: u64,
    retain_from_seq: Arc<AtomicU64>,
    retained_from_seq: u64,
    retention: Retention,
    sync_latency: hdrhistogram::Histogram<u64>,
    metrics: Arc<Metrics>,
}

impl JournalerState {
    fn handle(&mut self, slot: &InputSlot, ring_seq: i64, end_of_batch: bool) {
        let seq = self.base_seq + ring_seq as u64;
        let record = JournalRecord {
            seq,
            timestamp_ns: slot.command.timestamp_ns,
            command: slot.command,
        };
        if let Err(error) = self.journal.append(&record) {
            panic!("journal append of sequence {seq} failed: {error}");
        }
        self.batch_timestamps_ns.push(slot.command.timestamp_ns);
        if end_of_batch {
            let commit_started = Instant::now();
            if let Err(error) = self.journal.commit() {
                panic!("journal sync after sequence {seq} failed: {error}");
            }
            if self.journal.config().durability == ringmatch_journal::Durability::Batch {
                self.sync_latency
                    .saturating_record((commit_started.elapsed().as_nanos() as u64).max(1));
                if self.sync_latency.len() >= 64 {
                    if let Ok(mut shared) = self.metrics.journal_sync.try_lock() {
                        shared
                            .add(&self.sync_latency)
                            .expect("histograms share bounds");
                        self.sync_latency.reset();
                    }
                }
            }
            let now = now_ns();
            for timestamp_ns in self.batch_timestamps_ns.drain(..) {
                self.recorder.record(timestamp_ns, now);
            }
            self.apply_retention();
        }
        // Under `batch` the stage counts a command done only at the end of its batch, once
        // synced; the Matcher cannot see the batch earlier either.
        if end_of_batch {
            self.recorder.done(seq, true);
        }
    }

    fn apply_retention(&mut self) {
        let retain_from = self.retain_from_seq.load(Ordering::Acquire);
        if retain_from <= self.retained_from_seq {
            return;
        }
        self.retained_from_seq = retain_from;
        let archive = match &self.retention {
            Retention::Keep => return,
            Retention::Delete => None,
            Retention::Archive(folder) => Some(folder.clone()),
        };
        if let Err(error) = self.journal.retain_from(retain_from, archive.as_deref()) {
            panic!("journal retention failed: {error}");
        }
    }
}

impl Drop for JournalerState {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.metrics.journal_sync.lock() {
            let _ = shared.add(&self.sync_latency);
        }
        // A clean stop leaves everything on disk whatever the policy.
        if let Err(error) = self.journal.sync() {
            eprintln!("journal sync on shutdown failed: {error}");
        }
    }
}

struct PublisherState<S: OutputSink> {
    sink: S,
    market_data: Arc<MarketData>,
    batch_levels: Vec<Event>,
    recorder: StageRecorder,
    batch_timestamps_ns: Vec<u64>,
    batch_events_count: u64,
    metrics: Arc<Metrics>,
}

impl<S: OutputSink> PublisherState<S> {
    fn handle(&mut self, slot: &OutputSlot, end_of_batch: bool) {
        let event = &slot.event;
        self.sink.push(event);
        if event.event_type == ringmatch_proto::EventType::Level {
            self.batch_levels.push(*event);
        }
        if event.index == 0 {
            self.batch_timestamps_ns.push(event.timestamp_ns);
        }
        self.batch_events_count += 1;
        if end_of_batch {
            self.sink.end_of_batch();
            self.market_data.apply_all(&self.batch_levels);
            self.batch_levels.clear();
            self.metrics
                .events_written
                .fetch_add(self.batch_events_count, Ordering::Relaxed);
            self.batch_events_count = 0;
            let now = now_ns();
            for timestamp_ns in self.batch_timestamps_ns.drain(..) {
                self.recorder.record(timestamp_ns, now);
            }
            self.recorder.done(event.seq, true);
        }
    }
}

/// Applies optional pinning and a thread name to the next handler of a builder.
fn placed<B: ProcessorSettings<E, W>, E, W>(
    builder: B,
    core: Option<usize>,
    name: &'static str,
) -> B {
    let builder = builder.thread_name(name);
    match core {
        Some(core) => builder.pin_at_core(core),
        None => builder,
    }
}

impl Pipeline {
    /// Starts the stage threads. `engine` and `journal` must be recovered to the same point:
    /// the next command gets `journal.next_seq()`.
    pub fn start<S: OutputSink>(
        config: &PipelineConfig,
        engine: Engine,
        journal: Journal,
        sink: S,
        snapshots: Option<SnapshotStore>,
    ) -> Result<Pipeline, PipelineError> {
        Self::start_with_router(config, engine, journal, sink, snapshots, None)
    }

    /// Like [`Pipeline::start`], with a Responder stage that hands every event to `router`
    /// (in parallel with the Publisher) when one is given.
    pub fn start_with_router<S: OutputSink>(
        config: &PipelineConfig,
        engine: Engine,
        journal: Journal,
        sink: S,
        snapshots: Option<SnapshotStore>,
        router: Option<Box<dyn EventRouter>>,
    ) -> Result<Pipeline, PipelineError> {
        config.validate()?;
        let base_seq = journal.next_seq();
        let metrics = Arc::new(Metrics::new(
            config.input_ring_slots_count as u64,
            base_seq,
            journal.stats(),
        ));
        let retain_from_seq = Arc::new(AtomicU64::new(0));
        let mut durability = sink.durability();
        let last_event = sink.last_event_position();
        let (snapshot_sender, snapshot_writer) = match snapshots {
            Some(store) => {
                let (sender, receiver) = crossbeam_channel::bounded::<SnapshotRequest>(4);
                let metrics = Arc::clone(&metrics);
                let retain_from_seq = Arc::clone(&retain_from_seq);
                let handle = std::thread::Builder::new()
                    .name("snapshot-writer".into())
                    .spawn(move || {
                        write_snapshots(
                            &store,
                            &receiver,
                            &metrics,
                            &retain_from_seq,
                            &mut durability,
                        )
                    })
                    .expect("spawn the snapshot writer");
                (Some(sender), Some(handle))
            }
            None => (None, None),
        };

        // Who wakes whom when a stage parks: producers wake the Journaler and Replicator, those
        // two wake the Matcher, and the Matcher wakes the Publisher and Responder.
        let input_published = Arc::new(Signal::default());
        // Each stage says when its state is built: start returns only then, so the first
        // commands never wait for a stage that is still allocating and first touching its
        // memory (the Matcher builds the output ring; on a virtual machine that is thousands
        // of page faults, about 20 ms here).
        let stages_count = 4 + usize::from(router.is_some());
        let (ready_sender, ready_receiver) = crossbeam_channel::bounded::<()>(stages_count);
        let (publisher_ready, responder_ready, journaler_ready, replicator_ready, matcher_ready) = (
            ready_sender.clone(),
            ready_sender.clone(),
            ready_sender.clone(),
            ready_sender.clone(),
            ready_sender,
        );
        let input_stages_done = Arc::new(Signal::default());
        let output_published = Arc::new(Signal::default());
        let market_data = Arc::new(MarketData::from_engine(&engine));
        let publisher_market_data = Arc::clone(&market_data);
        let wait = ConfiguredWait(config.wait);
        let output_metrics = Arc::clone(&metrics);
        let publisher_core = config.cores.publisher;
        let output_ring_slots_count = config.output_ring_slots_count;
        let responder_core = config.cores.responder;
        let publisher_waits_on = Arc::clone(&output_published);
        let responder_waits_on = Arc::clone(&output_published);
        let (publisher_input, responder_input, journaler_input, replicator_input, matcher_input) = (
            Arc::clone(&input_published),
            Arc::clone(&input_published),
            Arc::clone(&input_published),
            Arc::clone(&input_published),
            Arc::clone(&input_published),
        );
        let make_output = move || {
            let metrics = output_metrics;
            let builder = build_single_producer(
                output_ring_slots_count,
                || OutputSlot {
                    event: Event::empty(ringmatch_proto::EventType::Level, CommandType::Place),
                    session: 0,
                    client_order_id: 0,
                },
                wait,
            );
            let recorder_metrics = Arc::clone(&metrics);
            let builder = placed(builder, publisher_core, "publisher")
                .handle_events_and_state_with(
                    |state: &mut PublisherState<S>, slot: &OutputSlot, _seq, end_of_batch| {
                        state.handle(slot, end_of_batch)
                    },
                    move || {
                        wait::bind_stage(publisher_waits_on, None, publisher_input);
                        let state = PublisherState {
                            sink,
                            market_data: publisher_market_data,
                            batch_levels: Vec::with_capacity(output_ring_slots_count),
                            recorder: StageRecorder::new(Stage::Published, recorder_metrics),
                            batch_timestamps_ns: Vec::with_capacity(output_ring_slots_count),
                            batch_events_count: 0,
                            metrics,
                        };
                        let _ = publisher_ready.send(());
                        state
                    },
                );
            match router {
                None => OutputProducer::Publisher(builder.build()),
                Some(router) => OutputProducer::PublisherAndResponder(
                    placed(builder, responder_core, "responder")
                        .handle_events_and_state_with(
                            |router: &mut Box<dyn EventRouter>,
                             slot: &OutputSlot,
                             _seq,
                             end_of_batch| {
                                router.route(slot);
                                if end_of_batch {
                                    router.end_of_batch();
                                }
                            },
                            move || {
                                wait::bind_stage(responder_waits_on, None, responder_input);
                                let _ = responder_ready.send(());
                                router
                            },
                        )
                        .build(),
                ),
            }
        };

        let journaler_metrics = Arc::clone(&metrics);
        let journaler_sync_metrics = Arc::clone(&metrics);
        let replicator_metrics = Arc::clone(&metrics);
        let matcher_metrics = Arc::clone(&metrics);
        let retention = config.retention.clone();
        let input_ring_slots_count = config.input_ring_slots_count;
        let journaler_waits_on = Arc::clone(&input_published);
        let replicator_waits_on = Arc::clone(&input_published);
        let (journaler_done, replicator_done) =
            (Arc::new(AtomicI64::new(-1)), Arc::new(AtomicI64::new(-1)));
        let journaler_announces = wait::Announce {
            signal: Arc::clone(&input_stages_done),
            mine: Arc::clone(&journaler_done),
            peers: vec![Arc::clone(&replicator_done)],
        };
        let replicator_announces = wait::Announce {
            signal: Arc::clone(&input_stages_done),
            mine: replicator_done,
            peers: vec![journaler_done],
        };
        let matcher_waits_on = input_stages_done;
        let snapshot_every_commands = config.snapshot_every_commands;
        let panic_at_seq = config.matcher_panic_at_seq;
        let builder = build_multi_producer(
            input_ring_slots_count,
            || InputSlot {
                command: Command::empty(CommandType::Place),
                session: 0,
            },
            wait,
        );
        let builder = placed(builder, config.cores.journaler, "journaler")
            .handle_events_and_state_with(
                |state: &mut JournalerState, slot: &InputSlot, seq, end_of_batch| {
                    wait::announce_progress();
                    state.handle(slot, seq, end_of_batch);
                    if end_of_batch {
                        wait::batch_done(seq);
                    }
                },
                move || {
                    wait::bind_stage(
                        journaler_waits_on,
                        Some(journaler_announces),
                        journaler_input,
                    );
                    let _ = journaler_ready.send(());
                    JournalerState {
                        journal,
                        recorder: StageRecorder::new(Stage::Journaled, journaler_metrics),
                        batch_timestamps_ns: Vec::with_capacity(input_ring_slots_count),
                        base_seq,
                        retain_from_seq,
                        retained_from_seq: 0,
                        retention,
                        sync_latency: new_histogram(),
                        metrics: journaler_sync_metrics,
                    }
                },
            );
        let builder = placed(builder, config.cores.replicator, "replicator")
            .handle_events_and_state_with(
                move |state: &mut (StageRecorder, Vec<u64>),
                      slot: &InputSlot,
                      ring_seq,
                      end_of_batch| {
                    // Replication mode `none`: the stage is in place and measured, and passes
                    // every command on.
                    wait::announce_progress();
                    let (recorder, batch_timestamps_ns) = state;
                    batch_timestamps_ns.push(slot.command.timestamp_ns);
                    if end_of_batch {
                        let now = now_ns();
                        for timestamp_ns in batch_timestamps_ns.drain(..) {
                            recorder.record(timestamp_ns, now);
                        }
                        recorder.done(base_seq + ring_seq as u64, true);
                        wait::batch_done(ring_seq);
                    }
                },
                move || {
                    wait::bind_stage(
                        replicator_waits_on,
                        Some(replicator_announces),
                        replicator_input,
                    );
                    let _ = replicator_ready.send(());
                    (
                        StageRecorder::new(Stage::Replicated, replicator_metrics),
                        Vec::with_capacity(input_ring_slots_count),
                    )
                },
            );
        let producer = placed(builder.and_then(), config.cores.matcher, "matcher")
            .handle_events_and_state_with(
                |state: &mut MatcherState, slot: &InputSlot, seq, end_of_batch| {
                    state.handle(slot, seq, end_of_batch)
                },
                move || {
                    wait::bind_stage(matcher_waits_on, None, matcher_input);
                    let state = MatcherState {
                        engine,
                        output: make_output(),
                        recorder: StageRecorder::new(Stage::Matched, Arc::clone(&matcher_metrics)),
                        snapshots: snapshot_sender,
                        snapshot_every_commands,
                        base_seq,
                        metrics: matcher_metrics,
                        panic_at_seq,
                        batch_timestamps_ns: Vec::with_capacity(input_ring_slots_count),
                        pending_events: Vec::with_capacity(OUTPUT_CHUNK_EVENTS_MAX),
                        output_chunk_max: OUTPUT_CHUNK_EVENTS_MAX.min(output_ring_slots_count),
                        events_count: 0,
                        last_event,
                        output_published,
                        unannounced_commands: 0,
                    };
                    let _ = matcher_ready.send(());
                    state
                },
            )
            .build();
        for _ in 0..stages_count {
            // A stage that panics while starting drops its sender; the panic itself stops the
            // service (see the panic policy in ARCHITECTURE.md), so nothing more is owed here.
            if ready_receiver.recv().is_err() {
                break;
            }
        }
        Ok(Pipeline {
            submitter: Some(Submitter {
                producer,
                base_seq,
                metrics: Arc::clone(&metrics),
                published: input_published,
            }),
            metrics,
            market_data,
            snapshot_writer,
        })
    }

    /// A new handle for putting commands on the ring.
    pub fn submitter(&self) -> Submitter {
        self.submitter.as_ref().expect("running").clone()
    }

    /// The shared metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The L2 books as of the last published batch.
    pub fn market_data(&self) -> Arc<MarketData> {
        Arc::clone(&self.market_data)
    }

    /// Stops taking input, drains both rings (every submitted command is journaled, matched
    /// and published), syncs the journal, and finishes pending snapshots. Every other
    /// [`Submitter`] must have been dropped, or this waits for them.
    pub fn shutdown(mut self) {
        // Dropping the last producer makes the disruptor drain the input ring and join its
        // stages; the Matcher's state then drops the output producer, which drains and joins
        // the Publisher; the Matcher's snapshot sender goes with it, ending the writer.
        drop(self.submitter.take());
        if let Some(writer) = self.snapshot_writer.take() {
            writer
                .join()
                .expect("snapshot writer panics are fatal before this point");
        }
    }
}

fn write_snapshots(
    store: &SnapshotStore,
    receiver: &crossbeam_channel::Receiver<SnapshotRequest>,
    metrics: &Metrics,
    retain_from_seq: &AtomicU64,
    durability: &mut OutputDurability,
) {
    for request in receiver {
        // The output must durably hold every event before the snapshot first: start-up
        // replays from the snapshot and could not produce those events again.
        let waiting_since = Instant::now();
        let mut reported = false;
        let waited = || {
            if !reported && waiting_since.elapsed() >= std::time::Duration::from_secs(5) {
                eprintln!(
                    "ringmatch: snapshot after sequence {} waits for the output to hold its \
                     events",
                    request.seq
                );
                reported = true;
            }
        };
        if let Err(error) = durability.wait_durable(metrics, request.events_before, waited) {
            // Without a durable output there is no snapshot: a later one covers it.
            eprintln!(
                "ringmatch: snapshot after sequence {} not written: the output could not be \
                 synced: {error}",
                request.seq
            );
            continue;
        }
        match store.write(request.seq, request.last_event, &request.state) {
            Ok(info) => {
                if let Ok(mut last) = metrics.last_snapshot.lock() {
                    *last = Some((info.seq, info.path.display().to_string(), info.size_bytes));
                }
                // Segments wholly before the oldest kept snapshot are no longer needed.
                if let Ok(kept) = store.list() {
                    if let Some(oldest) = kept.last() {
                        retain_from_seq.fetch_max(oldest.seq + 1, Ordering::AcqRel);
                    }
                }
            }
            // A failed snapshot costs restart time, not correctness: the journal still holds
            // everything. Report it and go on.
            Err(error) => eprintln!(
                "ringmatch: snapshot after sequence {} failed: {error}",
                request.seq
            ),
        }
    }
}

/// Installs a panic hook that prints the panic and ends the process at once with status 70,
/// so a stage that panics stops the whole service instead of leaving the others waiting on
/// it. The journal is intact: every record is checksummed and written in place, and records
/// after the last sync are cut as a torn tail on the next start if they were lost.
pub fn install_fatal_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current();
        eprintln!(
            "ringmatch: fatal: thread '{}' panicked; stopping the service",
            thread.name().unwrap_or("unnamed")
        );
        std::process::exit(70);
    }));
}

#[cfg(test)]
mod tests {
    use super::parse_core_list;

    #[test]
    fn the_kernels_core_list_format_is_parsed() {
        assert_eq!(parse_core_list("0"), Some(vec![0]));
        assert_eq!(parse_core_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_core_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_core_list(""), None);
        assert_eq!(parse_core_list("0-x"), None);
    }
}
