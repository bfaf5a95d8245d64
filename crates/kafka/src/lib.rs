//! The Kafka Publisher of ringmatch: the output-ring stage that publishes events to Apache
//! Kafka with `rdkafka` (bundled librdkafka), exactly once across crashes of the engine and of
//! the broker.
//!
//! - [`KafkaOutput::open`] connects, checks or creates the topics, initialises the producer
//!   (which fences any older producer with the same `transactional.id` and aborts its open
//!   transaction), then reads the last committed record of every partition: that is the
//!   resume point. Nothing but what Kafka holds is trusted. [`KafkaOutput::prepare`] does
//!   the part that fences nobody (connections, the topic check, the producer) ahead, so a
//!   cluster's follower pays only the fencing and the reads when it is promoted.
//! - [`KafkaOutput`] is an [`OutputSink`] and a [`ResumableOutput`]: start-up replays the
//!   journal into it and it skips every event a partition already holds; then the Publisher
//!   stage feeds it live events. It hands batches to its own producer thread, which commits a
//!   transaction every `commit_interval` or `commit_events_max` events (delivery
//!   `exactly_once`), or, with an idempotent producer (`at_least_once`), counts an event as
//!   out once it and every event before it are acknowledged.
//! - While the broker is away, events wait in memory (bounded) and then in the output ring;
//!   matching goes on until the rings fill, then input gets `busy`. A fenced producer stops the
//!   service (a panic: the fatal panic hook ends the process), so two engines never both write.
//!
//! Record layout, headers and the exactly-once argument: `docs/kafka.md`.
//!
//! This crate knows Kafka and the event record, but nothing of order-book rules, the journal
//! or the configuration file: the server maps its configuration onto [`KafkaConfig`].

mod metrics;
mod output;
mod record;
mod resume;
mod topics;

use std::time::Duration;

pub use metrics::KafkaMetrics;
pub use output::{KafkaOutput, OpenReport, PreparedKafka};
pub use record::{
    partition_of, topic_of, EventEncoder, OutputFormat, TopicKind, HEADER_INDEX, HEADER_SEQ,
    HEADER_VERSION, KAFKA_RECORD_VERSION,
};
pub use resume::{read_resume_points, read_resume_points_since, PartitionResume, ResumePoints};

/// How events are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A transactional producer: consumers reading `read_committed` see every event exactly
    /// once, in order.
    ExactlyOnce,
    /// An idempotent producer without transactions: lower latency; consumers read everything
    /// (no read_committed needed) and drop an event at or before the last (sequence, index)
    /// they saw in that partition, in case a retry after a crash doubled it.
    AtLeastOnce,
}

impl Delivery {
    /// Parses `exactly_once` or `at_least_once`.
    pub fn parse(text: &str) -> Result<Delivery, String> {
        match text {
            "exactly_once" => Ok(Delivery::ExactlyOnce),
            "at_least_once" => Ok(Delivery::AtLeastOnce),
            other => Err(format!(
                "unknown delivery {other:?}: expected \"exactly_once\" or \"at_least_once\""
            )),
        }
    }
}

/// Everything the Kafka Publisher needs.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Topic of every event but price levels.
    pub events_topic: String,
    /// Topic of price-level updates.
    pub market_data_topic: String,
    /// Partitions of each topic (instrument id modulo this picks the partition).
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i32,
    /// Create missing topics at start-up; otherwise a missing topic is an error.
    pub create_topics: bool,
    /// Delivery guarantee.
    pub delivery: Delivery,
    /// `transactional.id` (exactly once); also names the resume reader's client id.
    pub transactional_id: String,
    /// Commit (or flush) at least this often while events flow.
    pub commit_interval: Duration,
    /// Commit (or flush) once this many events are in the open transaction.
    pub commit_events_max: usize,
    /// How long start-up waits for the broker before giving up.
    pub connect_timeout: Duration,
    /// Record value format.
    pub format: OutputFormat,
    /// Extra librdkafka producer properties (for example `linger.ms`), applied last.
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A configuration with the documented defaults for `bootstrap`.
    pub fn new(bootstrap: &str) -> KafkaConfig {
        KafkaConfig {
            bootstrap: bootstrap.to_string(),
            events_topic: "ringmatch.events".into(),
            market_data_topic: "ringmatch.market-data".into(),
            partitions: 4,
            replication_factor: 1,
            create_topics: true,
            delivery: Delivery::ExactlyOnce,
            transactional_id: "ringmatch-1".into(),
            commit_interval: Duration::from_millis(20),
            commit_events_max: 50_000,
            connect_timeout: Duration::from_secs(10),
            format: OutputFormat::Binary,
            properties: Vec::new(),
        }
    }

    /// Checks the values that Kafka would reject later and less clearly.
    pub fn validate(&self) -> Result<(), KafkaOutputError> {
        let invalid = |problem: String| Err(KafkaOutputError::Config(problem));
        if self.bootstrap.trim().is_empty() {
            return invalid("kafka.bootstrap is empty".into());
        }
        if self.partitions < 1 {
            return invalid(format!(
                "kafka.partitions = {} must be at least 1",
                self.partitions
            ));
        }
        if self.replication_factor < 1 {
            return invalid(format!(
                "kafka.replication_factor = {} must be at least 1",
                self.replication_factor
            ));
        }
        for (key, topic) in [
            ("kafka.events_topic", &self.events_topic),
            ("kafka.market_data_topic", &self.market_data_topic),
        ] {
            let valid = !topic.is_empty()
                && topic.len() <= 249
                && topic
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                return invalid(format!(
                    "{key} = {topic:?} is not a valid Kafka topic name (1 to 249 of \
                     [a-zA-Z0-9._-])"
                ));
            }
        }
        if self.events_topic == self.market_data_topic {
            return invalid("kafka.events_topic and kafka.market_data_topic must differ".into());
        }
        if self.transactional_id.is_empty() {
            return invalid("kafka.transactional_id is empty".into());
        }
        if self.commit_events_max == 0 {
            return invalid("kafka.commit_events_max must be at least 1".into());
        }
        for (key, _) in &self.properties {
            if RESERVED_PROPERTIES.contains(&key.as_str()) {
                return invalid(format!(
                    "kafka.properties may not set {key:?}: the publisher's guarantees depend on \
                     it (reserved: {})",
                    RESERVED_PROPERTIES.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Producer properties the publisher sets itself; `kafka.properties` may not override them.
pub const RESERVED_PROPERTIES: [&str; 9] = [
    "bootstrap.servers",
    "acks",
    "enable.idempotence",
    "transactional.id",
    "transaction.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "client.id",
];

/// Why the Kafka output could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaOutputError {
    /// The configuration is invalid.
    #[error("invalid Kafka configuration: {0}")]
    Config(String),
    /// No broker answered.
    #[error(
        "cannot reach Kafka at {bootstrap} within {timeout:?} ({detail}); check kafka.bootstrap \
         and that the broker runs"
    )]
    Unreachable {
        /// The bootstrap servers tried.
        bootstrap: String,
        /// How long start-up waited.
        timeout: Duration,
        /// What librdkafka said.
        detail: String,
    },
    /// A topic does not exist and creating topics is off.
    #[error(
        "Kafka topic {topic:?} does not exist and kafka.create_topics is false; create it with \
         {partitions} partitions or set kafka.create_topics = true"
    )]
    MissingTopic {
        /// The topic.
        topic: String,
        /// The configured partitions.
        partitions: i32,
    },
    /// A topic exists with another partition count than configured; the instrument to
    /// partition mapping would change.
    #[error(
        "Kafka topic {topic:?} has {found} partitions but kafka.partitions = {configured}; \
         events are partitioned by instrument modulo the partition count, so it must match"
    )]
    PartitionMismatch {
        /// The topic.
        topic: String,
        /// Partitions the broker reports.
        found: i32,
        /// Partitions configured.
        configured: i32,
    },
    /// Another producer with the same `transactional.id` took over.
    #[error(
        "fenced: another engine initialised transactional.id {transactional_id:?}; this engine \
         stops so that two engines never both write"
    )]
    Fenced {
        /// The transactional id.
        transactional_id: String,
    },
    /// Kafka holds events of commands the journal does not have.
    #[error(
        "Kafka topic {topic:?} partition {partition} holds an event of sequence {seq}, but the \
         journal ends before sequence {journal_next_seq}: this data directory is not the one \
         that wrote this output (or lost journal records); refusing to start"
    )]
    AheadOfJournal {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The sequence found.
        seq: u64,
        /// The journal's next sequence.
        journal_next_seq: u64,
    },
    /// A record in a topic was not written by ringmatch (or by another format version).
    #[error("Kafka topic {topic:?} partition {partition} offset {offset}: {problem}")]
    BadRecord {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// What is wrong.
        problem: String,
    },
    /// Any other Kafka error.
    #[error("Kafka: {context}: {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// The error.
        source: rdkafka::error::KafkaError,
    },
}

/// True for the errors that mean another producer took over the transactional id.
pub fn is_fenced(error: &rdkafka::error::KafkaError) -> bool {
    error.rdkafka_error_code().is_some_and(is_fenced_code)
}

/// True for the error codes that mean another producer took over the transactional id.
pub fn is_fenced_code(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::Fenced | Code::ProducerFenced | Code::InvalidProducerEpoch
    )
}
