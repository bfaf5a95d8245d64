//! The output port: where the Publisher puts events, and how they become durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringmatch_proto::Event;

use crate::events_file::{EventPosition, EventsFile};
use crate::Metrics;

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
    /// Live events (those the Publisher counted in `Metrics::events_written`) that the output
    /// holds: durably for a counter, handed to the operating system for a synced sink.
    pub fn handed_over(&self, metrics: &Metrics) -> u64 {
        match self {
            OutputDurability::AtEndOfBatch | OutputDurability::Synced(_) => {
                metrics.events_written.load(Ordering::Acquire)
            }
            OutputDurability::Counter { counter, base } => {
                counter.load(Ordering::Acquire).saturating_sub(*base)
            }
        }
    }

    /// Makes every event handed over so far durable (a sync, for a synced sink).
    pub fn sync(&mut self) -> std::io::Result<()> {
        match self {
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
