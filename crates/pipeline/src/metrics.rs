//! Counters and latency histograms the stages update and the admin surface reads.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use ringmatch_journal::JournalStats;

/// The points of the pipeline whose latency from ingress is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The command is in the journal (durable per the policy).
    Journaled = 0,
    /// The replicator has passed the command.
    Replicated = 1,
    /// The matcher has applied the command.
    Matched = 2,
    /// The publisher has written the command's events.
    Published = 3,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 4] = [
        Stage::Journaled,
        Stage::Replicated,
        Stage::Matched,
        Stage::Published,
    ];

    /// Name used in metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Journaled => "journaled",
            Stage::Replicated => "replicated",
            Stage::Matched => "matched",
            Stage::Published => "published",
        }
    }
}

/// Highest trackable latency: one minute.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// A new latency histogram (1 ns to 60 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Nanoseconds since the Unix epoch (the unit of ingress timestamps).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |duration| duration.as_nanos() as u64)
}

/// Everything the service measures.
pub struct Metrics {
    /// Idle yields and parks of this pipeline's stages that are restricted to one core.
    pub wait_counters: Arc<crate::wait::WaitCounters>,
    /// Last sequence each stage finished, by [`Stage`].
    pub stage_seq: [AtomicU64; 4],
    /// Latency from ingress to each stage, by [`Stage`] (nanoseconds).
    pub stage_latency: [Mutex<Histogram<u64>>; 4],
    /// The exact sum of what each of `stage_latency` holds (nanoseconds), added with it.
    pub stage_latency_sum_ns: [AtomicU64; 4],
    /// Highest sequence published into the input ring.
    pub input_published_seq: AtomicU64,
    /// Slots in the input ring.
    pub input_ring_slots_count: u64,
    /// Submissions refused because the input ring was full.
    pub busy_count: AtomicU64,
    /// Events written to the output sink.
    pub events_written: AtomicU64,
    /// Replayed events the output sink already had.
    pub events_skipped: AtomicU64,
    /// How long the matcher paused for each snapshot (nanoseconds).
    pub snapshot_pause: Mutex<Histogram<u64>>,
    /// The exact sum of `snapshot_pause` (nanoseconds).
    pub snapshot_pause_sum_ns: AtomicU64,
    /// How long each journal commit (sync at the end of a batch) took (nanoseconds).
    pub journal_sync: Mutex<Histogram<u64>>,
    /// The exact sum of `journal_sync` (nanoseconds).
    pub journal_sync_sum_ns: AtomicU64,
    /// Snapshots skipped because the writer was still busy with earlier ones.
    pub snapshots_skipped: AtomicU64,
    /// The newest snapshot written: (sequence, file, size in bytes).
    pub last_snapshot: Mutex<Option<(u64, String, u64)>>,
    /// Journal counters.
    pub journal: Arc<JournalStats>,
    /// The matcher's next order expiry (nanoseconds since the Unix epoch; 0: none), as of
    /// the end of its last batch: the clock journals a `time` command when it comes.
    pub next_expiry_ns: AtomicU64,
}

impl Metrics {
    /// Metrics for a pipeline whose input ring has `input_ring_slots_count` slots and whose
    /// next command gets `next_seq`.
    pub fn new(input_ring_slots_count: u64, next_seq: u64, journal: Arc<JournalStats>) -> Metrics {
        let last = next_seq - 1;
        Metrics {
            stage_seq: std::array::from_fn(|_| AtomicU64::new(last)),
            stage_latency: std::array::from_fn(|_| Mutex::new(new_histogram())),
            stage_latency_sum_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            input_published_seq: AtomicU64::new(last),
            input_ring_slots_count,
            busy_count: AtomicU64::new(0),
            events_written: AtomicU64::new(0),
            events_skipped: AtomicU64::new(0),
            snapshot_pause: Mutex::new(new_histogram()),
            snapshot_pause_sum_ns: AtomicU64::new(0),
            journal_sync: Mutex::new(new_histogram()),
            journal_sync_sum_ns: AtomicU64::new(0),
            snapshots_skipped: AtomicU64::new(0),
            last_snapshot: Mutex::new(None),
            journal,
            wait_counters: Arc::default(),
            next_expiry_ns: AtomicU64::new(0),
        }
    }

    /// Commands in the input ring not yet matched.
    pub fn input_ring_occupancy(&self) -> u64 {
        self.input_published_seq
            .load(Ordering::Relaxed)
            .saturating_sub(self.stage_seq[Stage::Matched as usize].load(Ordering::Relaxed))
    }

    /// A copy of one stage's histogram.
    pub fn latency(&self, stage: Stage) -> Histogram<u64> {
        self.stage_latency[stage as usize]
            .lock()
            .expect("metrics lock is never poisoned: recorders do not panic while holding it")
            .clone()
    }
}

/// Latencies one thread records into a shared histogram and its exact sum. They are buffered
/// and written under the histogram's lock at each [`LatencyRecorder::flush`] (the end of a
/// batch), with `try_lock`: the recording thread never waits. When a reader holds the lock
/// at that moment, the buffer waits for the next flush; a buffer that fills before a flush
/// spills into a private histogram, added at the next flush. A [`StageRecorder`] also
/// flushes while its thread waits for input, so a reader sees every sample of every batch
/// that has ended, late by at most a batch or a wait.
pub struct LatencyRecorder {
    pending: Vec<u64>,
    spilled: Histogram<u64>,
    spilled_sum_ns: u64,
}

/// Samples buffered before they spill into the private histogram.
const PENDING_MAX: usize = 4096;

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            pending: Vec::with_capacity(PENDING_MAX),
            spilled: new_histogram(),
            spilled_sum_ns: 0,
        }
    }
}

impl LatencyRecorder {
    /// Records one latency (nanoseconds; clamped to the histograms' bounds).
    #[inline]
    pub fn record(&mut self, latency_ns: u64) {
        let latency_ns = latency_ns.clamp(1, LATENCY_NS_MAX);
        if self.pending.len() < PENDING_MAX {
            self.pending.push(latency_ns);
        } else {
            self.spilled.saturating_record(latency_ns);
            self.spilled_sum_ns += latency_ns;
        }
    }

    /// Writes what was recorded into `shared` and `sum_ns` unless a reader holds the lock.
    #[inline]
    pub fn flush(&mut self, shared: &Mutex<Histogram<u64>>, sum_ns: &AtomicU64) {
        if self.pending.is_empty() && self.spilled_sum_ns == 0 {
            return;
        }
        if let Ok(mut shared) = shared.try_lock() {
            self.write(&mut shared, sum_ns);
        }
    }

    /// Writes what was recorded, waiting for the lock (at a stop).
    pub fn flush_waiting(&mut self, shared: &Mutex<Histogram<u64>>, sum_ns: &AtomicU64) {
        if let Ok(mut shared) = shared.lock() {
            self.write(&mut shared, sum_ns);
        }
    }

    fn write(&mut self, shared: &mut Histogram<u64>, sum_ns: &AtomicU64) {
        let mut sum = 0;
        for latency_ns in self.pending.drain(..) {
            shared.saturating_record(latency_ns);
            sum += latency_ns;
        }
        if self.spilled_sum_ns > 0 {
            shared.add(&self.spilled).expect("histograms share bounds");
            sum += std::mem::take(&mut self.spilled_sum_ns);
            self.spilled.reset();
        }
        // Under the histogram's lock, so a reader sees the two agree.
        sum_ns.fetch_add(sum, Ordering::Relaxed);
    }
}

/// A stage's latency recorder and its sequence counter. It belongs to the thread that made
/// it: a batch whose latencies could not be written at its end (a reader held the lock) is
/// written by the thread's wait strategy while the stage waits for input
/// ([`crate::wait::add_idle_work`]), so the last batch before the engine goes idle is seen
/// too, not held until the next command.
pub struct StageRecorder {
    stage: Stage,
    metrics: Arc<Metrics>,
    latencies: Rc<RefCell<LatencyRecorder>>,
}

impl StageRecorder {
    /// A recorder for `stage`, on the calling thread (which then retries missed writes
    /// while it waits).
    pub fn new(stage: Stage, metrics: Arc<Metrics>) -> StageRecorder {
        let latencies = Rc::new(RefCell::new(LatencyRecorder::default()));
        let idle_latencies = Rc::downgrade(&latencies);
        let idle_metrics = Arc::clone(&metrics);
        crate::wait::add_idle_work(Box::new(move || {
            if let Some(latencies) = idle_latencies.upgrade() {
                if let Ok(mut latencies) = latencies.try_borrow_mut() {
                    latencies.flush(
                        &idle_metrics.stage_latency[stage as usize],
                        &idle_metrics.stage_latency_sum_ns[stage as usize],
                    );
                }
            }
            // Never counted as work: a retry does not make the thread look again at once.
            false
        }));
        StageRecorder {
            stage,
            metrics,
            latencies,
        }
    }

    /// Records the latency of a command stamped at `timestamp_ns`, as of `now_ns`.
    #[inline]
    pub fn record(&mut self, timestamp_ns: u64, now_ns: u64) {
        self.latencies
            .borrow_mut()
            .record(now_ns.saturating_sub(timestamp_ns));
    }

    /// Marks `seq` done; at the end of a batch, writes the batch's latencies to the shared
    /// histogram.
    #[inline]
    pub fn done(&mut self, seq: u64, end_of_batch: bool) {
        self.metrics.stage_seq[self.stage as usize].store(seq, Ordering::Release);
        if end_of_batch {
            let stage = self.stage as usize;
            self.latencies.borrow_mut().flush(
                &self.metrics.stage_latency[stage],
                &self.metrics.stage_latency_sum_ns[stage],
            );
        }
    }
}

impl Drop for StageRecorder {
    fn drop(&mut self) {
        let stage = self.stage as usize;
        self.latencies.borrow_mut().flush_waiting(
            &self.metrics.stage_latency[stage],
            &self.metrics.stage_latency_sum_ns[stage],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, Stage, StageRecorder};
    use crate::wait::{ConfiguredWait, WaitKind};
    use disruptor::wait_strategies::WaitStrategy;
    use std::sync::Arc;

    fn count(metrics: &Metrics, stage: Stage) -> u64 {
        metrics.latency(stage).len()
    }

    #[test]
    fn a_batch_whose_write_missed_is_written_while_the_stage_waits() {
        let metrics = Arc::new(Metrics::new(64, 1, Arc::default()));
        let mut recorder = StageRecorder::new(Stage::Matched, Arc::clone(&metrics));
        recorder.record(1_000, 5_000);
        recorder.record(1_000, 7_000);
        {
            // A reader holds the histogram at the end of the batch: the write is missed.
            let _reader = metrics.stage_latency[Stage::Matched as usize]
                .lock()
                .unwrap();
            recorder.done(1, true);
        }
        assert_eq!(count(&metrics, Stage::Matched), 0);
        // No further command comes; the stage waits for one, and the batch is written.
        ConfiguredWait(WaitKind::BusySpin).wait_for(2);
        assert_eq!(count(&metrics, Stage::Matched), 2);
        assert_eq!(
            metrics.stage_latency_sum_ns[Stage::Matched as usize]
                .load(std::sync::atomic::Ordering::Relaxed),
            10_000
        );
        // Written once: more waits add nothing.
        ConfiguredWait(WaitKind::BusySpin).wait_for(2);
        assert_eq!(count(&metrics, Stage::Matched), 2);
        drop(recorder);
        // A dropped recorder's retry is gone with it.
        ConfiguredWait(WaitKind::BusySpin).wait_for(2);
        assert_eq!(count(&metrics, Stage::Matched), 2);
    }
}
