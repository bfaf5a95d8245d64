//! The ring runtime: the disruptor rings, the stage threads and their wait strategy, which
//! drive the stage structs of [`crate::stages`]. Each stage thread owns a small wrapper (a
//! "run") that adds what only a running pipeline needs around the stage: its latency
//! recorder, its clock reads (one per batch), the wake-ups of the stages after it, and the
//! fatal end of the process when its port fails.
//!
//! ```text
//!  Submitter ─▶ INPUT RING ─┬─▶ JournalerRun  (Journaler: append; commit at end of batch)
//!                           └─▶ ReplicatorRun (Replicator: mode `none`)
//!                                   │ both done with a batch
//!                                   ▼
//!                               MatcherRun (Matcher) ─▶ OUTPUT RING ─┬─▶ PublisherRun (Publisher)
//!                                   │                                └─▶ Responder (acks, events)
//!                                   └─▶ snapshot-encoder thread ─▶ snapshot-writer thread
//!                                       (encodes the copied state,   (SnapshotWriter, then
//!                                        gives its memory back)       retention)
//! ```
//!
//! The Matcher copies a snapshot's pages between commands: a step of
//! [`SNAPSHOT_STEP_BYTES`] at each group it publishes, and step after step while its input is
//! idle (the wait strategy runs the Matcher's idle work before it spins, yields or parks).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use disruptor::{
    build_multi_producer, build_single_producer, MultiConsumerBarrier, ProcessorSettings, Producer,
    SingleConsumerBarrier, SingleProducer,
};
use ringmatch_journal::{retain_segments, SnapshotStore};
use ringmatch_matcher::{Engine, EventSink, FrozenState};
use ringmatch_proto::{CommandType, Event, EventType};

use crate::market_data::MarketData;
use crate::metrics::{now_ns, LatencyRecorder, Stage, StageRecorder};
use crate::ports::{JournalPort, ReplicaLink};
use crate::stages::{
    EventRouter, FrozenSnapshot, Journaler, Matcher, Publisher, Replicator, Responder,
    SnapshotRequest, SnapshotWriter, Written,
};
use crate::wait::{self, ConfiguredWait, Signal};
use crate::{
    InputSlot, Metrics, OutputSink, OutputSlot, PipelineConfig, PipelineError, Retention, Submitter,
};

/// The running pipeline.
pub struct Pipeline {
    submitter: Option<Submitter>,
    metrics: Arc<Metrics>,
    market_data: Arc<MarketData>,
    /// The snapshot encoder's and writer's threads, in the order they finish.
    snapshot_threads: Vec<JoinHandle<()>>,
}

/// Events of one command gathered before they go into the output ring in one batch claim, so
/// the Publisher sees a command's events together and the ring's cursor moves once.
const OUTPUT_CHUNK_EVENTS_MAX: usize = 256;
/// Within a long batch, the Matcher wakes the output stages at least this often.
const OUTPUT_NOTIFY_EVERY_COMMANDS: u32 = 32;
/// Commands whose events the Matcher gathers, within a batch, before it stamps them matched
/// (one clock read) and publishes them (one ring claim); a batch's last command goes out at
/// once, so an idle pipeline holds nothing back.
const OUTPUT_GROUP_COMMANDS_MAX: usize = 64;
/// Snapshot requests waiting for the writer at most; the encoder skips a snapshot beyond that.
const SNAPSHOTS_QUEUED_MAX: usize = 4;
/// What one step of a snapshot's copy copies on the Matcher's thread, about: tens of
/// microseconds (see `docs/benchmarks.md`, "Snapshot pause").
pub const SNAPSHOT_STEP_BYTES: usize = 256 * 1024;

impl Pipeline {
    /// Starts the stage threads. `engine` and `journal` must be recovered to the same point:
    /// the next command gets `journal.next_seq()`.
    pub fn start<S: OutputSink, J: JournalPort>(
        config: &PipelineConfig,
        engine: Engine,
        journal: J,
        sink: S,
        snapshots: Option<SnapshotStore>,
    ) -> Result<Pipeline, PipelineError> {
        Self::start_with_router(config, engine, journal, sink, snapshots, None)
    }

    /// Like [`Pipeline::start`], with a Responder stage that acknowledges each session's
    /// commands and hands every event to `router` (in parallel with the Publisher) when one
    /// is given.
    ///
    /// The wiring, as drawn in `docs/ARCHITECTURE.md`: the input ring feeds the Journaler and
    /// the Replicator in parallel; the Matcher runs a batch once both are done with it and
    /// fills the output ring, which feeds the Publisher and the Responder in parallel; the
    /// snapshot writer takes the Matcher's snapshot requests on a thread of its own.
    pub fn start_with_router<S: OutputSink, J: JournalPort>(
        config: &PipelineConfig,
        engine: Engine,
        journal: J,
        sink: S,
        snapshots: Option<SnapshotStore>,
        router: Option<Box<dyn EventRouter>>,
    ) -> Result<Pipeline, PipelineError> {
        Self::start_replicated(config, engine, journal, sink, snapshots, router, None)
    }

    /// Like [`Pipeline::start_with_router`], with the Matcher's thread waiting on `link`
    /// before it runs each command (a cluster's leader): the Matcher then runs only
    /// replicated commands.
    pub fn start_replicated<S: OutputSink, J: JournalPort>(
        config: &PipelineConfig,
        engine: Engine,
        journal: J,
        sink: S,
        snapshots: Option<SnapshotStore>,
        router: Option<Box<dyn EventRouter>>,
        link: Option<Box<dyn ReplicaLink>>,
    ) -> Result<Pipeline, PipelineError> {
        config.validate()?;
        let base_seq = journal.next_seq();
        let metrics = Arc::new(Metrics::new(
            config.input_ring_slots_count as u64,
            base_seq,
            journal.stats(),
        ));
        let wiring = Wiring::new(config, &metrics, router.is_some());
        let retention = RetentionJob {
            dir: journal.segments_dir().map(Path::to_path_buf),
            retention: config.retention.clone(),
        };
        let (snapshot_link, snapshot_threads) = match snapshots {
            Some(store) => {
                let writer = SnapshotWriter::new(store, sink.durability());
                let (requests, writer) = start_snapshot_writer(writer, &metrics, retention);
                let (to_encoder, returned, encoder) = start_snapshot_encoder(requests, &metrics);
                let link = SnapshotLink {
                    to_encoder,
                    returned,
                    pauses: LatencyRecorder::default(),
                    metrics: Arc::clone(&metrics),
                };
                (Some(link), vec![encoder, writer])
            }
            None => (None, Vec::new()),
        };
        let market_data = Arc::new(MarketData::from_engine(&engine));
        let matcher = Matcher::new(
            engine,
            base_seq,
            config.snapshot_every_commands,
            sink.last_event_position(),
        );
        let publisher = Publisher::new(
            sink,
            Arc::clone(&market_data),
            Arc::clone(&metrics),
            config.output_ring_slots_count,
        );

        // INPUT RING ─┬─▶ Journaler
        //             └─▶ Replicator ─▶ (both done) ─▶ Matcher ─▶ OUTPUT RING
        let (journaler_done, replicator_done) =
            (Arc::new(AtomicI64::new(-1)), Arc::new(AtomicI64::new(-1)));
        let input = build_multi_producer(
            config.input_ring_slots_count,
            || InputSlot {
                command: ringmatch_proto::Command::empty(CommandType::Place),
                session: 0,
            },
            wiring.wait,
        );
        let journaler = JournalerRun::factory(
            &wiring,
            Journaler::new(journal),
            [&journaler_done, &replicator_done],
        );
        let gated = link.is_some();
        let replicator = ReplicatorRun::factory(
            &wiring,
            base_seq,
            gated,
            [&replicator_done, &journaler_done],
        );
        let output_ring = OutputRing::factory(&wiring, publisher, router);
        let matcher_run =
            MatcherRun::factory(&wiring, base_seq, matcher, output_ring, snapshot_link, link);
        let input = placed(input, config.cores.journaler, "journaler")
            .handle_events_and_state_with(JournalerRun::handle, journaler);
        let input = placed(input, config.cores.replicator, "replicator")
            .handle_events_and_state_with(ReplicatorRun::handle, replicator);
        let producer = placed(input.and_then(), config.cores.matcher, "matcher")
            .handle_events_and_state_with(MatcherRun::handle, matcher_run)
            .build();
        let input_published = Arc::clone(&wiring.input_published);
        wiring.wait_until_built();
        Ok(Pipeline {
            submitter: Some(Submitter::new(
                producer,
                base_seq,
                Arc::clone(&metrics),
                input_published,
            )),
            metrics,
            market_data,
            snapshot_threads,
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
        // stages; the Matcher's state then finishes a snapshot it is copying and drops the
        // output producer, which drains and joins the Publisher; the Matcher's sender to the
        // snapshot encoder goes with it, ending the encoder, which ends the writer.
        drop(self.submitter.take());
        for thread in self.snapshot_threads.drain(..) {
            thread
                .join()
                .expect("snapshot thread panics are fatal before this point");
        }
    }
}

/// What every stage thread shares: the wait strategy, who wakes whom, the metrics, and the
/// channel on which each stage says that its state is built.
struct Wiring {
    wait: ConfiguredWait,
    metrics: Arc<Metrics>,
    /// Producers wake the Journaler and Replicator.
    input_published: Arc<Signal>,
    /// Those two wake the Matcher.
    input_stages_done: Arc<Signal>,
    /// The Matcher wakes the Publisher and Responder.
    output_published: Arc<Signal>,
    config: PipelineConfig,
    stages_count: usize,
    ready_sender: crossbeam_channel::Sender<()>,
    ready_receiver: crossbeam_channel::Receiver<()>,
}

impl Wiring {
    fn new(config: &PipelineConfig, metrics: &Arc<Metrics>, with_responder: bool) -> Wiring {
        let stages_count = 4 + usize::from(with_responder);
        let (ready_sender, ready_receiver) = crossbeam_channel::bounded(stages_count);
        Wiring {
            wait: ConfiguredWait(config.wait),
            metrics: Arc::clone(metrics),
            input_published: Arc::new(Signal::default()),
            input_stages_done: Arc::new(Signal::default()),
            output_published: Arc::new(Signal::default()),
            config: config.clone(),
            stages_count,
            ready_sender,
            ready_receiver,
        }
    }

    /// Start returns only once every stage has built its state, so the first commands never
    /// wait for a stage that is still allocating and first touching its memory (the Matcher
    /// builds the output ring; on a virtual machine that is thousands of page faults, about
    /// 20 ms here).
    fn wait_until_built(self) {
        // Only the stages hold senders from here on.
        drop(self.ready_sender);
        for _ in 0..self.stages_count {
            // A stage that panics while starting drops its sender; the panic itself stops the
            // service (see the panic policy in ARCHITECTURE.md), so nothing more is owed here.
            if self.ready_receiver.recv().is_err() {
                break;
            }
        }
    }

    /// What a stage reading the input ring waits on, announces to the Matcher (that `mine`
    /// is done, once `peer` is too) and is woken by.
    fn input_stage(
        &self,
        mine: &Arc<AtomicI64>,
        peer: &Arc<AtomicI64>,
    ) -> (Arc<Signal>, Option<wait::Announce>, Arc<Signal>) {
        let announces = wait::Announce {
            signal: Arc::clone(&self.input_stages_done),
            mine: Arc::clone(mine),
            peers: vec![Arc::clone(peer)],
        };
        (
            Arc::clone(&self.input_published),
            Some(announces),
            Arc::clone(&self.input_published),
        )
    }

    /// Makes a stage's recorder on the stage's own thread (it retries its writes there).
    fn recorder(&self, stage: Stage) -> impl FnOnce() -> StageRecorder + Send + 'static {
        let metrics = Arc::clone(&self.metrics);
        move || StageRecorder::new(stage, metrics)
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

/// The Journaler's thread.
struct JournalerRun<J: JournalPort> {
    journaler: Journaler<J>,
    recorder: StageRecorder,
    batch_timestamps_ns: Vec<u64>,
    base_seq: u64,
    sync_latency: LatencyRecorder,
    metrics: Arc<Metrics>,
}

impl<J: JournalPort> JournalerRun<J> {
    fn factory(
        wiring: &Wiring,
        journaler: Journaler<J>,
        [mine, peer]: [&Arc<AtomicI64>; 2],
    ) -> impl FnOnce() -> JournalerRun<J> {
        let (waits_on, announces, input) = wiring.input_stage(mine, peer);
        let ready = wiring.ready_sender.clone();
        let counters = Arc::clone(&wiring.metrics.wait_counters);
        let recorder = wiring.recorder(Stage::Journaled);
        let metrics = Arc::clone(&wiring.metrics);
        let slots_count = wiring.config.input_ring_slots_count;
        let base_seq = journaler.journal().next_seq();
        move || {
            wait::bind_stage(waits_on, announces, input, counters);
            let _ = ready.send(());
            JournalerRun {
                journaler,
                recorder: recorder(),
                batch_timestamps_ns: Vec::with_capacity(slots_count),
                base_seq,
                sync_latency: LatencyRecorder::default(),
                metrics,
            }
        }
    }

    fn handle(&mut self, slot: &InputSlot, ring_seq: i64, end_of_batch: bool) {
        wait::announce_progress();
        let seq = self.base_seq + ring_seq as u64;
        if let Err(error) = self.journaler.on_command(seq, &slot.command) {
            panic!("journal append of sequence {seq} failed: {error}");
        }
        self.batch_timestamps_ns.push(slot.command.timestamp_ns);
        if !end_of_batch {
            return;
        }
        let commit_started = Instant::now();
        if let Err(error) = self.journaler.end_of_batch() {
            panic!("journal sync after sequence {seq} failed: {error}");
        }
        if self.journaler.journal().commits_sync() {
            self.record_sync(commit_started.elapsed());
        }
        let now = now_ns();
        for timestamp_ns in self.batch_timestamps_ns.drain(..) {
            self.recorder.record(timestamp_ns, now);
        }
        // Under `batch` the stage counts a command done only at the end of its batch, once
        // synced; the Matcher cannot see the batch earlier either.
        self.recorder.done(seq, true);
        wait::batch_done(ring_seq);
    }

    /// Records one commit's sync.
    fn record_sync(&mut self, took: Duration) {
        self.sync_latency.record(took.as_nanos() as u64);
        self.sync_latency.flush(
            &self.metrics.journal_sync,
            &self.metrics.journal_sync_sum_ns,
        );
    }
}

impl<J: JournalPort> Drop for JournalerRun<J> {
    fn drop(&mut self) {
        self.sync_latency.flush_waiting(
            &self.metrics.journal_sync,
            &self.metrics.journal_sync_sum_ns,
        );
        // A clean stop leaves everything on disk whatever the policy.
        if let Err(error) = self.journaler.journal_mut().sync_all() {
            tracing::error!(target: "ringmatch", "journal sync on shutdown failed: {error}");
        }
    }
}

/// The Replicator's thread.
struct ReplicatorRun {
    replicator: Replicator,
    /// None on a cluster's leader: the Matcher's commit gate stamps `replicated` there.
    recorder: Option<StageRecorder>,
    batch_timestamps_ns: Vec<u64>,
    base_seq: u64,
}

impl ReplicatorRun {
    fn factory(
        wiring: &Wiring,
        base_seq: u64,
        gated: bool,
        [mine, peer]: [&Arc<AtomicI64>; 2],
    ) -> impl FnOnce() -> Self {
        let (waits_on, announces, input) = wiring.input_stage(mine, peer);
        let ready = wiring.ready_sender.clone();
        let counters = Arc::clone(&wiring.metrics.wait_counters);
        let recorder = wiring.recorder(Stage::Replicated);
        let slots_count = wiring.config.input_ring_slots_count;
        move || {
            wait::bind_stage(waits_on, announces, input, counters);
            let _ = ready.send(());
            ReplicatorRun {
                replicator: Replicator::default(),
                recorder: (!gated).then(recorder),
                batch_timestamps_ns: Vec::with_capacity(if gated { 0 } else { slots_count }),
                base_seq,
            }
        }
    }

    fn handle(&mut self, slot: &InputSlot, ring_seq: i64, end_of_batch: bool) {
        wait::announce_progress();
        let seq = self.base_seq + ring_seq as u64;
        self.replicator.on_command(seq, &slot.command);
        if self.recorder.is_some() {
            self.batch_timestamps_ns.push(slot.command.timestamp_ns);
        }
        if end_of_batch {
            if let Err(error) = self.replicator.end_of_batch() {
                panic!("replication of sequence {seq} failed: {error}");
            }
            if let Some(recorder) = &mut self.recorder {
                let now = now_ns();
                for timestamp_ns in self.batch_timestamps_ns.drain(..) {
                    recorder.record(timestamp_ns, now);
                }
                recorder.done(seq, true);
            }
            wait::batch_done(ring_seq);
        }
    }
}

/// The output ring's producer: one consumer (the Publisher), or two (Publisher and Responder).
enum OutputProducer {
    Publisher(SingleProducer<OutputSlot, SingleConsumerBarrier>),
    PublisherAndResponder(SingleProducer<OutputSlot, MultiConsumerBarrier>),
}

impl OutputProducer {
    fn try_publish_all(&mut self, pending: &[OutputSlot]) -> bool {
        // The batch iterator type of `disruptor` is not exported, so each arm has its closure
        // (a shared one over `dyn Iterator` would cost a call per slot).
        match self {
            OutputProducer::Publisher(producer) => producer
                .try_batch_publish(pending.len(), |slots| {
                    for (slot, filled) in slots.zip(pending) {
                        *slot = *filled;
                    }
                })
                .is_ok(),
            OutputProducer::PublisherAndResponder(producer) => producer
                .try_batch_publish(pending.len(), |slots| {
                    for (slot, filled) in slots.zip(pending) {
                        *slot = *filled;
                    }
                })
                .is_ok(),
        }
    }
}

/// Builds the output ring, with the Publisher and the Responder on it, on the Matcher's
/// thread (its memory is first touched there).
struct OutputRing;

impl OutputRing {
    fn factory<S: OutputSink>(
        wiring: &Wiring,
        publisher: Publisher<S>,
        router: Option<Box<dyn EventRouter>>,
    ) -> impl FnOnce() -> OutputProducer {
        let wait = wiring.wait;
        let slots_count = wiring.config.output_ring_slots_count;
        let cores = wiring.config.cores;
        let publisher = PublisherRun::factory(wiring, publisher);
        let responder = router.map(|router| {
            let (waits_on, input) = (
                Arc::clone(&wiring.output_published),
                Arc::clone(&wiring.input_published),
            );
            let ready = wiring.ready_sender.clone();
            let counters = Arc::clone(&wiring.metrics.wait_counters);
            move || {
                wait::bind_stage(waits_on, None, input, counters);
                let _ = ready.send(());
                Responder::new(router)
            }
        });
        move || {
            let builder = build_single_producer(
                slots_count,
                || OutputSlot {
                    event: Event::empty(EventType::Level, CommandType::Place),
                    session: 0,
                    client_order_id: 0,
                },
                wait,
            );
            let builder = placed(builder, cores.publisher, "publisher")
                .handle_events_and_state_with(PublisherRun::handle, publisher);
            match responder {
                None => OutputProducer::Publisher(builder.build()),
                Some(responder) => OutputProducer::PublisherAndResponder(
                    placed(builder, cores.responder, "responder")
                        .handle_events_and_state_with(
                            |responder: &mut Responder<dyn EventRouter>,
                             slot: &OutputSlot,
                             _ring_seq,
                             end_of_batch| {
                                responder.on_slot(slot);
                                if end_of_batch {
                                    responder.end_of_batch();
                                }
                            },
                            responder,
                        )
                        .build(),
                ),
            }
        }
    }
}

/// Collects matcher events and publishes them into the output ring in batches, waiting (spin,
/// yield, sleep) while the ring is full. Its buffers are allocated once, at start. Before
/// each publish it stamps the commands run since the last one as matched: a command's events
/// become visible to the Publisher only after its stamp, so its `matched` latency never
/// exceeds its `published` one (except for a command whose events fill a chunk before it
/// ends: its first chunk goes out before it is done and stamped).
struct RingSink<'a> {
    producer: &'a mut OutputProducer,
    session: u32,
    client_order_id: u64,
    pending: &'a mut Vec<OutputSlot>,
    chunk_max: usize,
    /// Ingress stamps of the commands run and not yet stamped matched.
    unstamped: &'a mut Vec<u64>,
    recorder: &'a mut StageRecorder,
}

impl RingSink<'_> {
    fn flush(&mut self) {
        if !self.unstamped.is_empty() {
            let now = now_ns();
            for timestamp_ns in self.unstamped.drain(..) {
                self.recorder.record(timestamp_ns, now);
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let mut polls = 0u32;
        while !self.producer.try_publish_all(self.pending) {
            polls += 1;
            if polls < 100 {
                std::hint::spin_loop();
            } else if polls < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
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
        self.pending.push(OutputSlot {
            event: *event,
            session: self.session,
            client_order_id: self.client_order_id,
        });
    }
}

/// The Matcher's side of snapshots.
struct SnapshotLink {
    /// Copied snapshots go to the encoder (one at most is out: the Matcher has one copy).
    to_encoder: crossbeam_channel::Sender<FrozenSnapshot>,
    /// The encoder gives each copy's memory back.
    returned: crossbeam_channel::Receiver<FrozenState>,
    /// Snapshot pauses, written to the shared histogram without waiting for its readers.
    pauses: LatencyRecorder,
    metrics: Arc<Metrics>,
}

/// The Matcher and its side of snapshots: shared by the Matcher's event handler and its idle
/// work, on the Matcher's thread (never both at once).
struct MatcherCore {
    matcher: Matcher,
    snapshots: Option<SnapshotLink>,
}

impl MatcherCore {
    /// Begins the snapshot now due, or skips it when the last one is still being copied or
    /// encoded.
    fn begin_snapshot(&mut self) {
        let Some(link) = &mut self.snapshots else {
            return;
        };
        while let Ok(state) = link.returned.try_recv() {
            self.matcher.give_back(state);
        }
        let started = Instant::now();
        if !self.matcher.begin_snapshot() {
            tracing::warn!(
                target: "ringmatch",
                "snapshot skipped: the last one is still being copied or encoded (a later one \
                 covers it)"
            );
            link.metrics
                .snapshots_skipped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.matcher
            .note_snapshot_work(started.elapsed().as_nanos() as u64);
    }

    /// Copies about `budget_bytes` more of the snapshot under way, and hands it to the
    /// encoder when that finishes it. False when no snapshot is being copied.
    fn step_snapshot(&mut self, budget_bytes: usize) -> bool {
        if !self.matcher.snapshot_copying() {
            return false;
        }
        let Some(link) = &mut self.snapshots else {
            return false;
        };
        let started = Instant::now();
        let copied = self.matcher.snapshot_step(budget_bytes);
        let elapsed_ns = started.elapsed().as_nanos() as u64;
        self.matcher.note_snapshot_work(elapsed_ns);
        if let Some(mut snapshot) = copied {
            snapshot.pause_ns = snapshot.pause_ns.max(elapsed_ns);
            snapshot.copy_ns += elapsed_ns;
            // Never waits for a reader of the histogram: a snapshot's pause is recorded with
            // the next snapshot's when a scrape holds the lock now.
            link.pauses.record(snapshot.pause_ns);
            link.pauses.flush(
                &link.metrics.snapshot_pause,
                &link.metrics.snapshot_pause_sum_ns,
            );
            // Never blocks: the Matcher has one copy, and the encoder took the last one
            // before it gave its memory back.
            if link.to_encoder.send(snapshot).is_err() {
                // The encoder only stops when the pipeline does.
                panic!("the snapshot encoder stopped");
            }
        }
        true
    }
}

/// The Matcher's thread.
struct MatcherRun {
    core: Rc<RefCell<MatcherCore>>,
    base_seq: u64,
    output: OutputProducer,
    recorder: StageRecorder,
    pending_events: Vec<OutputSlot>,
    output_chunk_max: usize,
    /// Ingress stamps of the commands run and not yet published.
    unstamped: Vec<u64>,
    /// Wakes the Publisher and Responder when they are parked.
    output_published: Arc<Signal>,
    /// Commands whose events were published since the last notify.
    unannounced_commands: u32,
    /// Where the next order expiry is told (`Metrics::next_expiry_ns`).
    metrics: Arc<Metrics>,
    /// On a cluster's leader: a command runs only once it is replicated.
    gate: Option<CommitGate>,
}

/// A cluster leader's Matcher runs a command only once its link says the command is
/// replicated. The wait is on the Matcher's own thread, so a commit wakes the Matcher itself
/// (the Replicator waiting and then waking the Matcher put a second thread's wake-up on every
/// command's path). It stamps `replicated` when the Matcher learns of the commit.
struct CommitGate {
    link: Box<dyn ReplicaLink>,
    /// Every command to this sequence is replicated.
    replicated_to: u64,
    /// When the Matcher learned so, for the `replicated` stamps.
    learned_at_ns: u64,
    recorder: StageRecorder,
}

impl CommitGate {
    /// Returns once `seq` is replicated; a link that says it never will be ends the service
    /// (the panic policy: this member no longer leads, and its callback has already acted).
    fn wait(&mut self, seq: u64) {
        match self.link.replicated(seq) {
            Ok(to) => {
                self.replicated_to = to;
                self.learned_at_ns = now_ns();
            }
            Err(error) => panic!("replication of sequence {seq} failed: {error}"),
        }
    }
}

impl MatcherRun {
    fn factory(
        wiring: &Wiring,
        base_seq: u64,
        mut matcher: Matcher,
        output: impl FnOnce() -> OutputProducer,
        snapshots: Option<SnapshotLink>,
        link: Option<Box<dyn ReplicaLink>>,
    ) -> impl FnOnce() -> MatcherRun {
        let (waits_on, input, output_published) = (
            Arc::clone(&wiring.input_stages_done),
            Arc::clone(&wiring.input_published),
            Arc::clone(&wiring.output_published),
        );
        let ready = wiring.ready_sender.clone();
        let counters = Arc::clone(&wiring.metrics.wait_counters);
        let recorder = wiring.recorder(Stage::Matched);
        let replicated_recorder = wiring.recorder(Stage::Replicated);
        let config = wiring.config.clone();
        let metrics = Arc::clone(&wiring.metrics);
        move || {
            wait::bind_stage(waits_on, None, input, counters);
            metrics.next_expiry_ns.store(
                matcher.engine().next_expiry_ns().unwrap_or(0),
                std::sync::atomic::Ordering::Relaxed,
            );
            if snapshots.is_some() {
                // The copy's memory is allocated and first touched here, on the Matcher's
                // thread, before the pipeline is ready.
                matcher.reserve_snapshots();
            }
            let core = Rc::new(RefCell::new(MatcherCore { matcher, snapshots }));
            let idle_core = Rc::clone(&core);
            wait::add_idle_work(Box::new(move || {
                idle_core
                    .try_borrow_mut()
                    .is_ok_and(|mut core| core.step_snapshot(SNAPSHOT_STEP_BYTES))
            }));
            let run = MatcherRun {
                core,
                base_seq,
                output: output(),
                recorder: recorder(),
                pending_events: Vec::with_capacity(OUTPUT_CHUNK_EVENTS_MAX),
                output_chunk_max: OUTPUT_CHUNK_EVENTS_MAX.min(config.output_ring_slots_count),
                unstamped: Vec::with_capacity(OUTPUT_GROUP_COMMANDS_MAX),
                output_published,
                unannounced_commands: 0,
                metrics,
                gate: link.map(|link| CommitGate {
                    link,
                    replicated_to: base_seq.saturating_sub(1),
                    learned_at_ns: 0,
                    recorder: replicated_recorder(),
                }),
            };
            let _ = ready.send(());
            run
        }
    }

    /// Publishes the events of the commands run since the last publish, stamps them matched,
    /// and wakes the Publisher and Responder.
    fn publish_group(&mut self) {
        if self.unstamped.is_empty() && self.pending_events.is_empty() {
            return;
        }
        RingSink {
            producer: &mut self.output,
            session: 0,
            client_order_id: 0,
            pending: &mut self.pending_events,
            chunk_max: self.output_chunk_max,
            unstamped: &mut self.unstamped,
            recorder: &mut self.recorder,
        }
        .flush();
        self.output_published.notify();
        self.unannounced_commands = 0;
        self.core.borrow_mut().step_snapshot(SNAPSHOT_STEP_BYTES);
    }

    fn handle(&mut self, slot: &InputSlot, ring_seq: i64, end_of_batch: bool) {
        let seq = self.base_seq + ring_seq as u64;
        let command = &slot.command;
        if self
            .gate
            .as_ref()
            .is_some_and(|gate| seq > gate.replicated_to)
        {
            // What ran before goes out first: its events do not wait on a later command's
            // replication.
            self.publish_group();
            // The latencies gathered so far go to the shared histograms too: the wait may be
            // long, and no idle work runs while it lasts.
            self.recorder.done(seq - 1, true);
            if let Some(gate) = &mut self.gate {
                gate.recorder.done(gate.replicated_to, true);
                gate.wait(seq);
            }
        }
        if let Some(gate) = &mut self.gate {
            gate.recorder
                .record(command.timestamp_ns, gate.learned_at_ns);
            if end_of_batch {
                gate.recorder.done(seq, true);
            }
        }
        let mut sink = RingSink {
            producer: &mut self.output,
            session: slot.session,
            client_order_id: command.client_order_id,
            pending: &mut self.pending_events,
            chunk_max: self.output_chunk_max,
            unstamped: &mut self.unstamped,
            recorder: &mut self.recorder,
        };
        let mut core = self.core.borrow_mut();
        let snapshot_due = core.matcher.on_command(seq, command, &mut sink);
        sink.unstamped.push(command.timestamp_ns);
        // The group goes out at the end of the batch, when it is full, and before a snapshot
        // (whose events mark the output must reach).
        let publish =
            end_of_batch || snapshot_due || sink.unstamped.len() >= OUTPUT_GROUP_COMMANDS_MAX;
        if publish {
            sink.flush();
        }
        // Wake a parked Publisher and Responder at the end of each batch, and every few
        // commands within a long one (a notify is an atomic add on a shared line; per command
        // it cost the Matcher measurable time flat out).
        self.unannounced_commands += 1;
        if publish && (end_of_batch || self.unannounced_commands >= OUTPUT_NOTIFY_EVERY_COMMANDS) {
            self.output_published.notify();
            self.unannounced_commands = 0;
        }
        if snapshot_due {
            core.begin_snapshot();
        } else if publish {
            core.step_snapshot(SNAPSHOT_STEP_BYTES);
        }
        if end_of_batch {
            let next_expiry_ns = core.matcher.engine().next_expiry_ns().unwrap_or(0);
            self.metrics
                .next_expiry_ns
                .store(next_expiry_ns, std::sync::atomic::Ordering::Relaxed);
            self.recorder.done(seq, true);
        }
    }
}

impl Drop for MatcherRun {
    /// A snapshot still being copied when the pipeline stops is finished and handed on.
    fn drop(&mut self) {
        wait::clear_idle_work();
        let mut core = self.core.borrow_mut();
        core.step_snapshot(usize::MAX);
    }
}

/// The Publisher's thread.
struct PublisherRun<S: OutputSink> {
    publisher: Publisher<S>,
    recorder: StageRecorder,
    batch_timestamps_ns: Vec<u64>,
}

impl<S: OutputSink> PublisherRun<S> {
    fn factory(wiring: &Wiring, publisher: Publisher<S>) -> impl FnOnce() -> PublisherRun<S> {
        let (waits_on, input) = (
            Arc::clone(&wiring.output_published),
            Arc::clone(&wiring.input_published),
        );
        let ready = wiring.ready_sender.clone();
        let counters = Arc::clone(&wiring.metrics.wait_counters);
        let recorder = wiring.recorder(Stage::Published);
        let slots_count = wiring.config.output_ring_slots_count;
        move || {
            wait::bind_stage(waits_on, None, input, counters);
            let run = PublisherRun {
                publisher,
                recorder: recorder(),
                batch_timestamps_ns: Vec::with_capacity(slots_count),
            };
            let _ = ready.send(());
            run
        }
    }

    fn handle(&mut self, slot: &OutputSlot, _ring_seq: i64, end_of_batch: bool) {
        let event = &slot.event;
        self.publisher.on_event(event);
        if event.index == 0 {
            self.batch_timestamps_ns.push(event.timestamp_ns);
        }
        if end_of_batch {
            self.publisher.end_of_batch();
            let now = now_ns();
            for timestamp_ns in self.batch_timestamps_ns.drain(..) {
                self.recorder.record(timestamp_ns, now);
            }
            self.recorder.done(event.seq, true);
        }
    }
}

/// Journal retention, run on the snapshot writer's thread after each snapshot, never on the
/// Journaler's: segments wholly before the oldest snapshot kept are deleted or archived.
struct RetentionJob {
    /// `None`: the journal allows no retention.
    dir: Option<PathBuf>,
    retention: Retention,
}

impl RetentionJob {
    fn run(&self, retain_from_seq: u64) {
        let Some(dir) = &self.dir else {
            return;
        };
        let archive = match &self.retention {
            Retention::Keep => return,
            Retention::Delete => None,
            Retention::Archive(folder) => Some(folder.as_path()),
        };
        if let Err(error) = retain_segments(dir, retain_from_seq, archive) {
            panic!("journal retention failed: {error}");
        }
    }
}

/// The snapshot encoder's thread: encodes each copied snapshot, gives the copy's memory back
/// to the Matcher, and queues the request for the writer. When the writer is behind (it waits
/// for the output to hold the events before each snapshot, and the output may be waiting for
/// its broker), the snapshot is skipped and counted; a later one covers it.
fn start_snapshot_encoder(
    requests: crossbeam_channel::Sender<SnapshotRequest>,
    metrics: &Arc<Metrics>,
) -> (
    crossbeam_channel::Sender<FrozenSnapshot>,
    crossbeam_channel::Receiver<FrozenState>,
    JoinHandle<()>,
) {
    let (to_encoder, copied) = crossbeam_channel::bounded::<FrozenSnapshot>(1);
    let (give_back, returned) = crossbeam_channel::bounded::<FrozenState>(1);
    let metrics = Arc::clone(metrics);
    let handle = std::thread::Builder::new()
        .name("snapshot-encoder".into())
        .spawn(move || {
            for snapshot in copied {
                let (request, state) = snapshot.encode();
                // The Matcher is gone when the pipeline stops: nobody needs the memory then.
                let _ = give_back.send(state);
                match requests.try_send(request) {
                    Ok(()) => {}
                    Err(crossbeam_channel::TrySendError::Full(request)) => {
                        tracing::warn!(
                            target: "ringmatch",
                            seq = request.seq,
                            "snapshot skipped: the writer is still busy with earlier ones (a \
                             later one covers it)"
                        );
                        metrics.snapshots_skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    // The writer thread only stops when the pipeline does.
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                        panic!("the snapshot writer stopped")
                    }
                }
            }
        })
        .expect("spawn the snapshot encoder");
    (to_encoder, returned, handle)
}

fn start_snapshot_writer(
    mut writer: SnapshotWriter<SnapshotStore>,
    metrics: &Arc<Metrics>,
    retention: RetentionJob,
) -> (crossbeam_channel::Sender<SnapshotRequest>, JoinHandle<()>) {
    let (sender, receiver) = crossbeam_channel::bounded::<SnapshotRequest>(SNAPSHOTS_QUEUED_MAX);
    let metrics = Arc::clone(metrics);
    let handle = std::thread::Builder::new()
        .name("snapshot-writer".into())
        .spawn(move || {
            for request in receiver {
                wait_until_ready(&writer, &request, &metrics);
                match writer.write(&request) {
                    Written::Done {
                        info,
                        retain_from_seq,
                    } => {
                        tracing::info!(
                            target: "ringmatch",
                            seq = info.seq,
                            pause_ms = request.pause_ns as f64 / 1e6,
                            copy_ms = request.copy_ns as f64 / 1e6,
                            size_bytes = info.size_bytes,
                            path = %info.path.display(),
                            "snapshot written"
                        );
                        if let Ok(mut last) = metrics.last_snapshot.lock() {
                            *last =
                                Some((info.seq, info.path.display().to_string(), info.size_bytes));
                        }
                        retention.run(retain_from_seq);
                    }
                    // Without a durable output there is no snapshot: a later one covers it.
                    Written::OutputNotDurable(error) => tracing::warn!(
                        target: "ringmatch",
                        seq = request.seq,
                        "snapshot not written: the output could not be synced: {error}"
                    ),
                    // A failed snapshot costs restart time, not correctness: the journal
                    // still holds everything. Report it and go on.
                    Written::Failed(error) => tracing::error!(
                        target: "ringmatch",
                        seq = request.seq,
                        "snapshot failed: {error}"
                    ),
                }
            }
        })
        .expect("spawn the snapshot writer");
    (sender, handle)
}

/// Waits until the output holds every event before the snapshot, saying so once after 5 s.
fn wait_until_ready(
    writer: &SnapshotWriter<SnapshotStore>,
    request: &SnapshotRequest,
    metrics: &Metrics,
) {
    let waiting_since = Instant::now();
    let mut reported = false;
    while !writer.ready(request, metrics) {
        if !reported && waiting_since.elapsed() >= Duration::from_secs(5) {
            tracing::warn!(
                target: "ringmatch",
                seq = request.seq,
                "snapshot waits for the output to hold its events"
            );
            reported = true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
