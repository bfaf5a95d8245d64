//! The Kafka output sink and its producer thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use ringmatch_pipeline::{EventPosition, OutputDurability, OutputSink, ResumableOutput};
use ringmatch_proto::Event;

use crate::record::{partition_of, topic_of, EventEncoder, TopicKind};
use crate::resume::{
    read_resume_points, read_resume_points_after, read_resume_points_with, ResumePoints,
};
use crate::topics::{base_config, ensure_topics, reader};
use crate::{
    is_fenced, is_fenced_code, Delivery, KafkaConfig, KafkaMetrics, KafkaOutputError, HEADER_INDEX,
    HEADER_SEQ, HEADER_VERSION, KAFKA_RECORD_VERSION,
};

/// Events handed to the producer thread in one message at most.
const BATCH_EVENTS_MAX: usize = 4096;
/// Batches waiting for the producer thread at most; then the Publisher waits (and the output
/// ring fills behind it).
const BATCHES_QUEUED_MAX: usize = 64;
/// How long one commit (or flush) may take before it is retried.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// `transaction.timeout.ms`: 15 minutes, the broker's default `transaction.max.timeout.ms`.
const TRANSACTION_TIMEOUT_MS: &str = "900000";
/// How long a clean shutdown waits for the last commit while the broker is away.
const SHUTDOWN_COMMIT_WAIT: Duration = Duration::from_secs(30);
/// How long one call that initialises transactions waits before it is made again ([`fence`]).
const FENCE_WAIT: Duration = Duration::from_millis(20);
/// The pause before asking again when the coordinator answered it is still busy.
const FENCE_PAUSE: Duration = Duration::from_millis(5);
/// Pause between retries while the broker is away.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// What opening the Kafka output found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// Topics created at start-up.
    pub created_topics: Vec<String>,
    /// The last committed event of every partition.
    pub resume: ResumePoints,
    /// How long connecting, fencing and reading the resume points took.
    pub open_duration: Duration,
    /// Of which: checking (or creating) the topics.
    pub topics_duration: Duration,
    /// Of which: initialising transactions (fencing older producers, aborting their open
    /// transaction).
    pub fence_duration: Duration,
    /// Whether the connections and the topic check were made ahead
    /// ([`KafkaOutput::prepare`], on a cluster's follower): the durations are then the
    /// promotion's part only.
    pub prepared_ahead: bool,
}

/// The Kafka output sink: skips what Kafka holds, hands the rest to the producer thread.
pub struct KafkaOutput {
    partitions: i32,
    encoder: EventEncoder,
    resume: ResumePoints,
    batch: Vec<Event>,
    sender: Option<Sender<Vec<Event>>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<KafkaMetrics>,
    skipped_count: u64,
    taken_count: u64,
    /// The newest event pushed (skipped or taken), or the newest Kafka held at open.
    last_position: Option<EventPosition>,
    value: Vec<u8>,
}

impl KafkaOutput {
    /// Connects, checks or creates the topics, reads what Kafka holds (read_committed, with no
    /// transactional producer yet) and refuses an output ahead of the journal, then
    /// initialises the producer (fencing any older one with the same transactional id), reads
    /// the resume points again and starts the producer thread. `journal_next_seq` is the
    /// journal's next sequence: Kafka holding an event of a later command is an error, found
    /// before anything is fenced, so an engine started on the wrong data directory never
    /// stops the live one. The same as [`KafkaOutput::prepare`] then [`PreparedKafka::open`].
    pub fn open(
        config: &KafkaConfig,
        encoder: EventEncoder,
        journal_next_seq: u64,
    ) -> Result<(KafkaOutput, OpenReport), KafkaOutputError> {
        let started = Instant::now();
        let mut prepared = KafkaOutput::prepare(config)?;
        prepared.setup_counted = Some(started.elapsed());
        prepared.open(encoder, journal_next_seq)
    }

    /// Everything of [`KafkaOutput::open`] that touches no transaction: connects a reader,
    /// checks (or creates) the topics and creates the producer, without initialising its
    /// transactions. So it fences nobody, and a cluster's follower prepares while another
    /// member leads; a promotion then pays only the fencing and two reads on warm
    /// connections.
    pub fn prepare(config: &KafkaConfig) -> Result<PreparedKafka, KafkaOutputError> {
        config.validate()?;
        let reader = reader(config)?;
        let created_topics = ensure_topics(&reader, config)?;
        let failures = Arc::new(DeliveryFailures::default());
        let tracker = Acknowledged::new(2 * config.partitions as usize);
        let producer = build_producer(config, &failures, &tracker.delivered)?;
        Ok(PreparedKafka {
            config: config.clone(),
            reader,
            created_topics,
            failures,
            tracker,
            producer,
            setup_counted: None,
        })
    }

    /// The shared metrics.
    pub fn metrics(&self) -> Arc<KafkaMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Hands the gathered events to the producer thread, waiting while its queue is full.
    fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_EVENTS_MAX));
        self.metrics
            .events_pending
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let sender = self.sender.as_ref().expect("open until dropped");
        if sender.send(batch).is_err() {
            panic!("the Kafka producer thread stopped");
        }
    }
}

/// A Kafka output up to its transactions ([`KafkaOutput::prepare`]): a connected reader,
/// the topics checked, the producer created. Nothing is fenced until [`PreparedKafka::open`].
pub struct PreparedKafka {
    config: KafkaConfig,
    reader: BaseConsumer,
    created_topics: Vec<String>,
    failures: Arc<DeliveryFailures>,
    tracker: Acknowledged,
    producer: BaseProducer<Context>,
    /// How long the preparing took, when it is part of this open (`KafkaOutput::open`);
    /// `None` when it was done ahead (a follower's).
    setup_counted: Option<Duration>,
}

impl PreparedKafka {
    /// The rest of [`KafkaOutput::open`]: checks the topics again and reads what Kafka holds
    /// on the warm reader, refuses an output ahead of the journal, fences older producers
    /// (initialising transactions), reads again and starts the producer thread.
    pub fn open(
        self,
        encoder: EventEncoder,
        journal_next_seq: u64,
    ) -> Result<(KafkaOutput, OpenReport), KafkaOutputError> {
        let started = Instant::now();
        let PreparedKafka {
            config,
            reader,
            mut created_topics,
            failures,
            tracker,
            producer,
            setup_counted,
        } = self;
        let config = &config;
        // Checked again: the topics may have changed since a follower prepared.
        created_topics.extend(ensure_topics(&reader, config)?);
        // What Kafka holds as committed, read before this engine's producer initialises its
        // transactions: a start on an empty or foreign data directory is refused here, while
        // the live engine (if any) still owns the transactional id.
        let before_fence = read_resume_points_with(&reader, config)?;
        refuse_ahead_of_journal(config, &before_fence, journal_next_seq)?;
        let topics_duration = started.elapsed();
        let producer = match config.delivery {
            Delivery::ExactlyOnce => fence(config, producer)?,
            Delivery::AtLeastOnce => producer,
        };
        let fence_duration = started.elapsed() - topics_duration;
        // Fencing ended any transaction an older producer had open: read again, since it
        // may have committed more since the first read (only what lies after it).
        let resume = read_resume_points_after(&reader, config, &before_fence)?;
        refuse_ahead_of_journal(config, &resume, journal_next_seq)?;
        // Closing a consumer can take a fetch wait or a broker thread's poll (0.1 s seen in
        // promotions): not on the way to the first acknowledgement.
        let closing = std::thread::Builder::new()
            .name("kafka-reader-close".into())
            .spawn(move || drop(reader));
        if let Err(error) = closing {
            tracing::warn!(target: "ringmatch", "kafka: closing the reader inline: {error}");
        }
        let metrics = Arc::new(KafkaMetrics::default());
        let (sender, receiver) = crossbeam_channel::bounded(BATCHES_QUEUED_MAX);
        let producer_loop = ProducerLoop {
            config: config.clone(),
            encoder,
            producer,
            failures,
            receiver,
            unconfirmed: VecDeque::new(),
            sizes: VecDeque::new(),
            acknowledged: tracker,
            in_transaction: false,
            transaction_started: Instant::now(),
            metrics: Arc::clone(&metrics),
            value: Vec::with_capacity(512),
            last_complaint: None,
            outage_since: None,
            shutdown_deadline: None,
            already_in_kafka: 0,
        };
        let thread = std::thread::Builder::new()
            .name("kafka-producer".into())
            .spawn(move || producer_loop.run())
            .map_err(|error| KafkaOutputError::Config(format!("spawn a thread: {error}")))?;
        let report = OpenReport {
            created_topics,
            resume: resume.clone(),
            open_duration: setup_counted.unwrap_or_default() + started.elapsed(),
            topics_duration: setup_counted.unwrap_or_default() + topics_duration,
            fence_duration,
            prepared_ahead: setup_counted.is_none(),
        };
        let last_position = resume.max();
        Ok((
            KafkaOutput {
                partitions: config.partitions,
                encoder,
                resume,
                batch: Vec::with_capacity(BATCH_EVENTS_MAX),
                sender: Some(sender),
                thread: Some(thread),
                metrics,
                skipped_count: 0,
                taken_count: 0,
                last_position,
                value: Vec::with_capacity(512),
            },
            report,
        ))
    }
}

/// Initialises the producer's transactions, which fences every older producer of the
/// transactional id and aborts a transaction one left open. When one was open, the
/// coordinator answers "concurrent transactions" while it aborts, and librdkafka asks again
/// only after a fixed 500 ms, unless `init_transactions` is called again: a call finds the
/// last answer (it returns it once its wait is over) and, when no request is outstanding,
/// asks at once; while one is outstanding it only waits for it. So the call is made again
/// every [`FENCE_WAIT`] (and [`FENCE_PAUSE`] after a "busy" answer) on the same producer,
/// until `connect_timeout`: no request is ever abandoned, so none can fence this producer
/// later, and the fence ends within a few milliseconds of the abort.
fn fence(
    config: &KafkaConfig,
    producer: BaseProducer<Context>,
) -> Result<BaseProducer<Context>, KafkaOutputError> {
    let deadline = Instant::now() + config.connect_timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = |error: &KafkaError| {
            matches!(
                error.rdkafka_error_code(),
                Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)
            )
        };
        // The coordinator still aborting (or moving).
        let busy = |error: &KafkaError| {
            matches!(
                error.rdkafka_error_code(),
                Some(
                    RDKafkaErrorCode::ConcurrentTransactions
                        | RDKafkaErrorCode::CoordinatorLoadInProgress
                        | RDKafkaErrorCode::NotCoordinator
                        | RDKafkaErrorCode::CoordinatorNotAvailable
                )
            ) || matches!(error, KafkaError::Transaction(error) if error.is_retriable())
        };
        match producer.init_transactions(FENCE_WAIT.min(left)) {
            Ok(()) => return Ok(producer),
            Err(error) if timed_out(&error) && !left.is_zero() => {}
            Err(error) if busy(&error) && !left.is_zero() => std::thread::sleep(FENCE_PAUSE),
            Err(error) if timed_out(&error) || busy(&error) => {
                return Err(KafkaOutputError::Unreachable {
                    bootstrap: config.bootstrap.clone(),
                    timeout: config.connect_timeout,
                    detail: format!("initialising transactions: {error}"),
                })
            }
            Err(error) => {
                return Err(KafkaOutputError::Kafka {
                    context: format!(
                        "initialising transactions for transactional.id {:?}",
                        config.transactional_id
                    ),
                    source: error,
                })
            }
        }
    }
}

/// Err if any partition holds an event of a command at or after `journal_next_seq`.
fn refuse_ahead_of_journal(
    config: &KafkaConfig,
    resume: &ResumePoints,
    journal_next_seq: u64,
) -> Result<(), KafkaOutputError> {
    for (topic, partitions) in [
        (&config.events_topic, &resume.events),
        (&config.market_data_topic, &resume.market_data),
    ] {
        for (partition, point) in partitions.iter().enumerate() {
            if let Some((seq, _)) = point.last {
                if seq >= journal_next_seq {
                    return Err(KafkaOutputError::AheadOfJournal {
                        topic: topic.clone(),
                        partition: partition as i32,
                        seq,
                        journal_next_seq,
                    });
                }
            }
        }
    }
    Ok(())
}

impl OutputSink for KafkaOutput {
    fn push(&mut self, event: &Event) {
        self.last_position = Some((event.seq, event.index));
        let topic = topic_of(event);
        let partition = partition_of(event, self.partitions) as usize;
        let point = match topic {
            TopicKind::Events => &self.resume.events[partition],
            TopicKind::MarketData => &self.resume.market_data[partition],
        };
        if let Some(last) = point.last {
            let position = (event.seq, event.index);
            if position <= last {
                if position == last {
                    self.encoder.encode(event, &mut self.value);
                    assert!(
                        self.value == point.last_value,
                        "replay produced a different event at the resume point {last:?} than \
                         Kafka holds at offset {} of partition {partition}",
                        point.offset
                    );
                }
                self.skipped_count += 1;
                self.metrics.events_skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.taken_count += 1;
        self.batch.push(*event);
        if self.batch.len() >= BATCH_EVENTS_MAX {
            self.send_batch();
        }
    }

    fn end_of_batch(&mut self) {
        self.send_batch();
    }

    fn durability(&self) -> OutputDurability {
        OutputDurability::Counter {
            counter: Arc::clone(&self.metrics.events_committed),
            base: self.taken_count,
        }
    }

    fn last_event_position(&self) -> Option<EventPosition> {
        self.last_position
    }
}

impl ResumableOutput for KafkaOutput {
    /// The newest event any partition holds. The producer commits events in stream order and
    /// a transaction commits all its partitions at once, so every event before it is held
    /// too (under `at_least_once`, acknowledged per partition, this is as close as Kafka
    /// tells).
    fn resume_position(&self) -> Option<EventPosition> {
        self.resume.max()
    }

    fn skipped_count(&self) -> u64 {
        self.skipped_count
    }
}

impl Drop for KafkaOutput {
    /// Hands over what is left and waits until the producer thread committed it all.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        self.send_batch();
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Delivery failures reported by librdkafka (`at_least_once` checks them after each flush).
#[derive(Default)]
struct DeliveryFailures {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

struct Context {
    failures: Arc<DeliveryFailures>,
    /// Records acknowledged, per (topic, partition) slot (`at_least_once` tracking).
    delivered: Arc<Vec<AtomicU64>>,
}

impl ClientContext for Context {}

impl ProducerContext for Context {
    /// The slot (topic, partition) of the record.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        if result.is_ok() {
            if let Some(delivered) = self.delivered.get(slot) {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err((error, _)) = result {
            self.failures.count.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.failures.first.lock() {
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

fn build_producer(
    config: &KafkaConfig,
    failures: &Arc<DeliveryFailures>,
    delivered: &Arc<Vec<AtomicU64>>,
) -> Result<BaseProducer<Context>, KafkaOutputError> {
    let mut client: ClientConfig = base_config(config, "producer");
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "262144");
    match config.delivery {
        Delivery::ExactlyOnce => {
            client
                .set("transactional.id", &config.transactional_id)
                // The broker's default maximum: a transaction left open by a broker outage is
                // aborted by the coordinator only after this long.
                .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS);
        }
        // No timeout: while the broker is away, events wait; they are never dropped.
        Delivery::AtLeastOnce => {
            client.set("message.timeout.ms", "0");
        }
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
        .create_with_context(Context {
            failures: Arc::clone(failures),
            delivered: Arc::clone(delivered),
        })
        .map_err(|source| KafkaOutputError::Kafka {
            context: "creating the producer (check kafka.properties)".into(),
            source,
        })
}

/// What an error leaves behind.
enum Recovery {
    /// Nothing was lost: retry the same step.
    Retry,
    /// The open transaction is gone (aborted, or a new producer): produce every unconfirmed
    /// event again.
    Reproduce,
}

/// The producer thread: produces batches, commits, and recovers from every error but
/// fencing.
struct ProducerLoop {
    config: KafkaConfig,
    encoder: EventEncoder,
    producer: BaseProducer<Context>,
    failures: Arc<DeliveryFailures>,
    receiver: Receiver<Vec<Event>>,
    /// Produced (or about to be), not yet committed: produced again after an abort.
    unconfirmed: VecDeque<Event>,
    /// Value size of each unconfirmed event, once produced.
    sizes: VecDeque<u32>,
    /// Which unconfirmed records are acknowledged (`at_least_once`).
    acknowledged: Acknowledged,
    in_transaction: bool,
    transaction_started: Instant,
    metrics: Arc<KafkaMetrics>,
    value: Vec<u8>,
    last_complaint: Option<Instant>,
    /// When the current run of failed commits began (None: committing).
    outage_since: Option<Instant>,
    /// Set when the Publisher has gone: give up committing after it.
    shutdown_deadline: Option<Instant>,
    /// Unconfirmed events a rebuilt producer found already in Kafka; counted as committed
    /// only with the rest of the buffer, so the committed count stays a prefix of the stream
    /// (partitions of an idempotent producer are acknowledged independently).
    already_in_kafka: u64,
}

impl ProducerLoop {
    fn run(mut self) {
        loop {
            let wait = if self.unconfirmed.is_empty() {
                Duration::from_millis(100)
            } else {
                self.config
                    .commit_interval
                    .saturating_sub(self.transaction_started.elapsed())
            };
            match self.receiver.recv_timeout(wait) {
                Ok(batch) => {
                    if self.unconfirmed.is_empty() {
                        self.transaction_started = Instant::now();
                    }
                    let from = self.unconfirmed.len();
                    self.unconfirmed.extend(batch.iter().copied());
                    self.sizes.resize(self.unconfirmed.len(), 0);
                    self.produce_from(from);
                    // One poll serves one event (a batch of delivery reports); serve several
                    // so reports do not pile up behind a steady stream of batches.
                    for _ in 0..8 {
                        self.producer.poll(Duration::ZERO);
                    }
                    if self.config.delivery == Delivery::AtLeastOnce {
                        self.confirm_acknowledged();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_COMMIT_WAIT);
                    if !self.commit() {
                        tracing::warn!(
                            target: "ringmatch",
                            "kafka: stopping with {} events not committed (the broker did not \
                             answer within {} s); the next start publishes them from the journal",
                            self.unconfirmed.len(),
                            SHUTDOWN_COMMIT_WAIT.as_secs()
                        );
                    }
                    return;
                }
            }
            let due = self.transaction_started.elapsed() >= self.config.commit_interval
                || self.unconfirmed.len() >= self.config.commit_events_max;
            if !self.unconfirmed.is_empty() && due {
                self.commit();
            }
        }
    }

    /// Produces `unconfirmed[from..]`, recovering from errors until it is all handed over.
    fn produce_from(&mut self, mut from: usize) {
        loop {
            match self.try_produce_from(from) {
                Ok(()) => return,
                Err((reached, error)) => match self.recover(error) {
                    Recovery::Retry => from = reached,
                    Recovery::Reproduce => from = 0,
                },
            }
        }
    }

    fn try_produce_from(&mut self, from: usize) -> Result<(), (usize, KafkaError)> {
        if self.config.delivery == Delivery::ExactlyOnce && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(|error| (from, error))?;
            self.in_transaction = true;
        }
        let tracked = self.config.delivery == Delivery::AtLeastOnce;
        if from == 0 && tracked {
            self.acknowledged.restart();
        }
        for position in from..self.unconfirmed.len() {
            let event = self.unconfirmed[position];
            self.encoder.encode(&event, &mut self.value);
            let topic = match topic_of(&event) {
                TopicKind::Events => self.config.events_topic.as_str(),
                TopicKind::MarketData => self.config.market_data_topic.as_str(),
            };
            let mut seq = Decimal::default();
            let mut index = Decimal::default();
            let mut version = Decimal::default();
            let mut key = Decimal::default();
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: HEADER_SEQ,
                    value: Some(seq.format(event.seq)),
                })
                .insert(Header {
                    key: HEADER_INDEX,
                    value: Some(index.format(event.index.into())),
                })
                .insert(Header {
                    key: HEADER_VERSION,
                    value: Some(version.format(KAFKA_RECORD_VERSION.into())),
                });
            let partition = partition_of(&event, self.config.partitions);
            let slot =
                topic_of(&event) as usize * self.config.partitions as usize + partition as usize;
            let mut record = BaseRecord::with_opaque_to(topic, slot)
                .partition(partition)
                .key(key.format(event.instrument.into()))
                .payload(self.value.as_slice())
                .headers(headers);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        self.metrics
                            .errors_queue_full
                            .fetch_add(1, Ordering::Relaxed);
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => return Err((position, error)),
                }
            }
            self.sizes[position] = self.value.len() as u32;
            if tracked {
                self.acknowledged.produced(slot, position);
            }
        }
        Ok(())
    }

    /// Commits the open transaction (or drains and checks deliveries), recovering from
    /// errors until it succeeds; false if the shutdown deadline passed first.
    fn commit(&mut self) -> bool {
        while !self.unconfirmed.is_empty() {
            if self
                .shutdown_deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
            {
                return false;
            }
            let started = Instant::now();
            match self.try_commit() {
                Ok(())
                    if self.config.delivery == Delivery::AtLeastOnce
                        && self.shutdown_deadline.is_none() =>
                {
                    self.confirm_acknowledged();
                    self.transaction_started = Instant::now();
                    return true;
                }
                Ok(()) => {
                    self.committed(started.elapsed());
                    return true;
                }
                Err(error) => {
                    if let Recovery::Reproduce = self.recover(error) {
                        self.produce_from(0);
                    }
                }
            }
        }
        true
    }

    fn try_commit(&mut self) -> Result<(), KafkaError> {
        match self.config.delivery {
            Delivery::ExactlyOnce => {
                // Drained first: the library's own flush polls in 100 ms steps.
                self.drain()?;
                self.producer.commit_transaction(COMMIT_TIMEOUT)?;
                self.in_transaction = false;
                Ok(())
            }
            // Records are confirmed as their acknowledgements arrive; only a stop waits for
            // all of them.
            Delivery::AtLeastOnce => {
                if self.shutdown_deadline.is_some() {
                    self.drain()?;
                } else {
                    self.producer.poll(Duration::ZERO);
                }
                if let Some((code, reason)) = self.producer.client().fatal_error() {
                    self.complain(&format!("the producer failed ({code}: {reason})"));
                    return Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fatal));
                }
                if self.failures.count.swap(0, Ordering::Relaxed) > 0 {
                    let first = self
                        .failures
                        .first
                        .lock()
                        .ok()
                        .and_then(|mut first| first.take())
                        .unwrap_or_default();
                    self.complain(&format!("delivery failed ({first}); producing again"));
                    // Not retriable as is: rebuild and produce what Kafka lacks.
                    return Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fatal));
                }
                Ok(())
            }
        }
    }

    /// Waits until every produced record is acknowledged (or failed), serving delivery
    /// reports every millisecond.
    fn drain(&self) -> Result<(), KafkaError> {
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// The whole buffer is committed (a transaction, or a drain).
    fn committed(&mut self, took: Duration) {
        if let Ok(mut latency) = self.metrics.commit_latency.lock() {
            let took_ns = (took.as_nanos() as u64).clamp(1, latency.high());
            latency.saturating_record(took_ns);
            self.metrics
                .commit_latency_sum_ns
                .fetch_add(took_ns, Ordering::Relaxed);
        }
        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        self.confirm(self.unconfirmed.len());
        self.acknowledged.restart();
        self.transaction_started = Instant::now();
        if let Some(since) = self.outage_since.take() {
            self.last_complaint = None;
            tracing::info!(
                target: "ringmatch",
                outage_s = since.elapsed().as_secs_f64(),
                "kafka: committing again"
            );
        }
    }

    /// `at_least_once`: confirms the longest run of buffered events that are all
    /// acknowledged, without waiting for the rest.
    fn confirm_acknowledged(&mut self) {
        let count = self.acknowledged.confirmable(self.unconfirmed.len());
        if count > 0 {
            self.confirm(count);
            self.acknowledged.confirmed(count);
            self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The first `count` buffered events are in Kafka: out of the buffer, into the metrics.
    fn confirm(&mut self, count: usize) {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        if let Ok(mut lag) = self.metrics.output_lag.lock() {
            let mut sum_ns = 0;
            for event in self.unconfirmed.range(..count) {
                if event.index == 0 {
                    let lag_ns = now_ns
                        .saturating_sub(event.timestamp_ns)
                        .clamp(1, lag.high());
                    lag.saturating_record(lag_ns);
                    sum_ns += lag_ns;
                }
            }
            self.metrics
                .output_lag_sum_ns
                .fetch_add(sum_ns, Ordering::Relaxed);
        }
        let last = count
            .checked_sub(1)
            .map(|position| self.unconfirmed[position].seq);
        let bytes: u64 = self.sizes.drain(..count).map(u64::from).sum();
        self.unconfirmed.drain(..count);
        let mut events = count as u64;
        if self.unconfirmed.is_empty() {
            events += std::mem::take(&mut self.already_in_kafka);
        }
        self.metrics
            .bytes_committed
            .fetch_add(bytes, Ordering::Relaxed);
        self.metrics
            .events_pending
            .fetch_sub(events, Ordering::Relaxed);
        if let Some(seq) = last {
            self.metrics.committed_seq.store(seq, Ordering::Relaxed);
        }
        // Last: the snapshot writer waits on this count.
        self.metrics
            .events_committed
            .fetch_add(events, Ordering::Release);
    }

    /// Handles an error of a produce, commit or flush: fencing stops the service; a retriable
    /// error waits; an abortable one aborts; anything else builds a new producer.
    fn recover(&mut self, error: KafkaError) -> Recovery {
        if is_fenced(&error) {
            self.fenced();
        }
        let exactly_once = self.config.delivery == Delivery::ExactlyOnce;
        let (retriable, requires_abort, fatal) = match &error {
            KafkaError::Transaction(rd) => {
                (rd.is_retriable(), rd.txn_requires_abort(), rd.is_fatal())
            }
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut) => (true, false, false),
            // A produce refused inside a transaction (for example `State`: the transaction
            // is abortable): abort it and produce again.
            KafkaError::MessageProduction(code)
                if exactly_once && self.in_transaction && *code != RDKafkaErrorCode::Fatal =>
            {
                (false, true, false)
            }
            _ => (false, self.in_transaction, true),
        };
        if retriable {
            self.metrics
                .errors_retriable
                .fetch_add(1, Ordering::Relaxed);
            self.complain(&format!("{error}; retrying"));
            std::thread::sleep(RETRY_PAUSE);
            return Recovery::Retry;
        }
        if requires_abort && !fatal {
            self.metrics.errors_aborted.fetch_add(1, Ordering::Relaxed);
            self.complain(&format!(
                "{error}; aborting the transaction and producing again"
            ));
            loop {
                match self.producer.abort_transaction(COMMIT_TIMEOUT) {
                    Ok(()) => {
                        self.in_transaction = false;
                        return Recovery::Reproduce;
                    }
                    Err(error) if is_fenced(&error) => return self.recover(error),
                    Err(KafkaError::Transaction(rd)) if rd.is_retriable() => {
                        std::thread::sleep(RETRY_PAUSE)
                    }
                    Err(error) => {
                        self.complain(&format!("abort failed: {error}"));
                        break;
                    }
                }
            }
        }
        if exactly_once {
            // A new producer would fence whoever holds the transactional id now, perhaps a
            // standby that took over: stop instead. The next start resumes exactly once from
            // what Kafka holds.
            if let Some((code, _)) = self.producer.client().fatal_error() {
                if is_fenced_code(code) {
                    self.fenced();
                }
            }
            panic!(
                "kafka: the transactional producer failed ({error}); stopping, the next start \
                 resumes exactly once from what Kafka holds"
            );
        }
        self.rebuild(&error);
        Recovery::Reproduce
    }

    /// Another engine holds the transactional id: stop the service (the fatal panic hook ends
    /// the process), so that two engines never both write.
    fn fenced(&self) -> ! {
        panic!(
            "kafka: {}",
            KafkaOutputError::Fenced {
                transactional_id: self.config.transactional_id.clone()
            }
        );
    }

    /// `at_least_once` only (no transactional id, so nobody is fenced): a new producer, then
    /// the resume points read again from Kafka; whatever a partition already holds is dropped
    /// from the unconfirmed events.
    fn rebuild(&mut self, cause: &KafkaError) {
        self.metrics.errors_fatal.fetch_add(1, Ordering::Relaxed);
        self.complain(&format!("{cause}; starting a new producer"));
        let producer = loop {
            // Fresh counters: acknowledgements of the old producer must not count for the new.
            self.acknowledged = Acknowledged::new(self.acknowledged.seen.len());
            match build_producer(&self.config, &self.failures, &self.acknowledged.delivered) {
                Ok(producer) => break producer,
                Err(error) => self.complain(&format!("{error}; retrying")),
            }
            std::thread::sleep(RETRY_PAUSE);
        };
        self.producer = producer;
        self.failures.count.store(0, Ordering::Relaxed);
        let resume = loop {
            match read_resume_points(&self.config) {
                Ok(resume) => break resume,
                Err(error) => self.complain(&format!("{error}; retrying")),
            }
            std::thread::sleep(RETRY_PAUSE);
        };
        let partitions = self.config.partitions;
        let before = self.unconfirmed.len();
        self.unconfirmed.retain(|event| {
            let partition = partition_of(event, partitions) as usize;
            let point = match topic_of(event) {
                TopicKind::Events => &resume.events[partition],
                TopicKind::MarketData => &resume.market_data[partition],
            };
            point
                .last
                .is_none_or(|last| (event.seq, event.index) > last)
        });
        self.already_in_kafka += (before - self.unconfirmed.len()) as u64;
        // Sizes are set again as the kept events are produced again.
        self.sizes.clear();
        self.sizes.resize(self.unconfirmed.len(), 0);
    }

    /// Logs a problem, at most once a second while it lasts.
    fn complain(&mut self, problem: &str) {
        if self
            .last_complaint
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(target: "ringmatch", "kafka: {problem}");
            self.last_complaint = Some(Instant::now());
            self.outage_since.get_or_insert_with(Instant::now);
        }
    }
}

/// An unsigned integer as ASCII decimal, without allocating.
#[derive(Default)]
struct Decimal {
    digits: [u8; 20],
}

impl Decimal {
    fn format(&mut self, mut value: u64) -> &[u8] {
        let mut start = self.digits.len();
        loop {
            start -= 1;
            self.digits[start] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                return &self.digits[start..];
            }
        }
    }
}

/// Which produced records librdkafka acknowledged, for `at_least_once`: records of one
/// partition are acknowledged in order, so per (topic, partition) slot it is enough to count
/// acknowledgements and keep the buffer positions produced there, oldest first.
struct Acknowledged {
    /// Acknowledgements per slot, counted by the delivery callback.
    delivered: Arc<Vec<AtomicU64>>,
    /// Acknowledgements already taken off `pending`, per slot.
    seen: Vec<u64>,
    /// Buffer positions (relative to `base`) produced per slot, not yet acknowledged.
    pending: Vec<VecDeque<u64>>,
    /// Number of the buffer's first event since the producer (re)started producing.
    base: u64,
    /// Buffered events produced so far, from the buffer's start.
    produced_count: usize,
}

impl Acknowledged {
    fn new(slots: usize) -> Acknowledged {
        Acknowledged {
            delivered: Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect()),
            seen: vec![0; slots],
            pending: vec![VecDeque::new(); slots],
            base: 0,
            produced_count: 0,
        }
    }

    /// Everything is being produced again from the buffer's start (by a new producer, whose
    /// counters start at zero).
    fn restart(&mut self) {
        for (slot, pending) in self.pending.iter_mut().enumerate() {
            pending.clear();
            self.seen[slot] = self.delivered[slot].load(Ordering::Relaxed);
        }
        self.base = 0;
        self.produced_count = 0;
    }

    fn produced(&mut self, slot: usize, position: usize) {
        self.pending[slot].push_back(self.base + position as u64);
        self.produced_count = position + 1;
    }

    /// How many events from the buffer's start are acknowledged, of `buffered`.
    fn confirmable(&mut self, buffered: usize) -> usize {
        let mut first_missing = self.base + buffered.min(self.produced_count) as u64;
        for (slot, pending) in self.pending.iter_mut().enumerate() {
            let delivered = self.delivered[slot].load(Ordering::Relaxed);
            while self.seen[slot] < delivered && pending.pop_front().is_some() {
                self.seen[slot] += 1;
            }
            if let Some(&first) = pending.front() {
                first_missing = first_missing.min(first);
            }
        }
        (first_missing - self.base) as usize
    }

    fn confirmed(&mut self, count: usize) {
        self.base += count as u64;
        self.produced_count -= count;
    }
}

#[cfg(test)]
mod tests {
    use super::{Acknowledged, Decimal};
    use std::sync::atomic::Ordering;

    #[test]
    fn only_a_fully_acknowledged_prefix_is_confirmable() {
        // Buffer positions 0..5 produced on slots 0,1,0,1,0; 5 buffered, one not produced.
        let mut acknowledged = Acknowledged::new(2);
        acknowledged.restart();
        for (position, slot) in [0, 1, 0, 1, 0].into_iter().enumerate() {
            acknowledged.produced(slot, position);
        }
        assert_eq!(acknowledged.confirmable(6), 0, "nothing acknowledged yet");
        // Slot 1 acknowledges both its records (positions 1 and 3): position 0 still missing.
        acknowledged.delivered[1].fetch_add(2, Ordering::Relaxed);
        assert_eq!(acknowledged.confirmable(6), 0);
        // Slot 0 acknowledges its first record (position 0): positions 0 and 1 are in.
        acknowledged.delivered[0].fetch_add(1, Ordering::Relaxed);
        assert_eq!(acknowledged.confirmable(6), 2);
        acknowledged.confirmed(2);
        // Everything produced acknowledged: 3 more, but not the unproduced sixth event.
        acknowledged.delivered[0].fetch_add(2, Ordering::Relaxed);
        assert_eq!(acknowledged.confirmable(4), 3);
        acknowledged.confirmed(3);
        // The next record continues the numbering after the confirmed ones.
        acknowledged.produced(1, 0);
        assert_eq!(acknowledged.confirmable(1), 0);
        acknowledged.delivered[1].fetch_add(1, Ordering::Relaxed);
        assert_eq!(acknowledged.confirmable(1), 1);
    }

    #[test]
    fn decimals_match_the_standard_formatting() {
        for value in [0, 1, 9, 10, 99, 100, 12_345, u32::MAX as u64, u64::MAX] {
            assert_eq!(
                Decimal::default().format(value),
                value.to_string().as_bytes()
            );
        }
    }
}
