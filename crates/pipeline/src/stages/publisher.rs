//! The Publisher: hands every event to the output sink (Kafka or the events file) and, at the
//! end of each batch, flushes the sink, applies the batch's level and fill events to the L2
//! book and the newest trades the admin surface serves, and counts the events it handed over.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ringmatch_proto::{Event, EventType};

use crate::market_data::MarketData;
use crate::{Metrics, OutputSink};

/// The Publisher's state.
pub struct Publisher<S: OutputSink> {
    sink: S,
    market_data: Arc<MarketData>,
    batch_levels: Vec<Event>,
    batch_events_count: u64,
    metrics: Arc<Metrics>,
}

impl<S: OutputSink> Publisher<S> {
    /// A Publisher into `sink`, with room for `batch_events_max` level and fill events per batch
    /// before its buffer grows.
    pub fn new(
        sink: S,
        market_data: Arc<MarketData>,
        metrics: Arc<Metrics>,
        batch_events_max: usize,
    ) -> Publisher<S> {
        Publisher {
            sink,
            market_data,
            batch_levels: Vec::with_capacity(batch_events_max),
            batch_events_count: 0,
            metrics,
        }
    }

    /// One event.
    #[inline]
    pub fn on_event(&mut self, event: &Event) {
        self.sink.push(event);
        if matches!(event.event_type, EventType::Level | EventType::Fill) {
            self.batch_levels.push(*event);
        }
        self.batch_events_count += 1;
    }

    /// The end of a batch: the sink flushes, and the events count as handed over
    /// (`Metrics::events_written`, which the snapshot writer waits on).
    pub fn end_of_batch(&mut self) {
        self.sink.end_of_batch();
        self.market_data.apply_all(&self.batch_levels);
        self.batch_levels.clear();
        self.metrics
            .events_written
            .fetch_add(self.batch_events_count, Ordering::Release);
        self.batch_events_count = 0;
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, taken back (the simulator's crash).
    pub fn into_sink(self) -> S {
        self.sink
    }
}
