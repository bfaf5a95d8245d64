//! What the Kafka Publisher measures: output lag, commit latency, volume and errors.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Largest latency the histograms hold: one hour, in nanoseconds.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Shared counters and histograms of the Kafka Publisher.
#[derive(Debug)]
pub struct KafkaMetrics {
    /// Output lag per event: from the command's ingress timestamp to the commit (or confirmed
    /// flush) that made the event visible to consumers, in nanoseconds.
    pub output_lag: Mutex<Histogram<u64>>,
    /// How long each commit (or flush) took, in nanoseconds.
    pub commit_latency: Mutex<Histogram<u64>>,
    /// The exact sum of `output_lag` (nanoseconds).
    pub output_lag_sum_ns: AtomicU64,
    /// The exact sum of `commit_latency` (nanoseconds).
    pub commit_latency_sum_ns: AtomicU64,
    /// Events committed (visible to consumers), replayed ones included; shared with the
    /// pipeline, whose snapshot writer waits on it.
    pub events_committed: Arc<AtomicU64>,
    /// Value bytes committed.
    pub bytes_committed: AtomicU64,
    /// Transactions committed (or flushes confirmed).
    pub commits: AtomicU64,
    /// Sequence of the newest committed event (0: none yet).
    pub committed_seq: AtomicU64,
    /// Events handed to the producer thread, not yet committed.
    pub events_pending: AtomicU64,
    /// Replayed events skipped because Kafka held them.
    pub events_skipped: AtomicU64,
    /// Errors the publisher retried (the broker away, timeouts).
    pub errors_retriable: AtomicU64,
    /// Transactions aborted and produced again.
    pub errors_aborted: AtomicU64,
    /// Producers rebuilt after a fatal error.
    pub errors_fatal: AtomicU64,
    /// Local queue full (back-pressure from librdkafka).
    pub errors_queue_full: AtomicU64,
}

impl Default for KafkaMetrics {
    fn default() -> Self {
        KafkaMetrics {
            output_lag: Mutex::new(histogram()),
            commit_latency: Mutex::new(histogram()),
            output_lag_sum_ns: AtomicU64::new(0),
            commit_latency_sum_ns: AtomicU64::new(0),
            events_committed: Arc::new(AtomicU64::new(0)),
            bytes_committed: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed_seq: AtomicU64::new(0),
            events_pending: AtomicU64::new(0),
            events_skipped: AtomicU64::new(0),
            errors_retriable: AtomicU64::new(0),
            errors_aborted: AtomicU64::new(0),
            errors_fatal: AtomicU64::new(0),
            errors_queue_full: AtomicU64::new(0),
        }
    }
}
