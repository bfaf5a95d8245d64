//! The snapshot writer: writes each snapshot the Matcher asks for, once the output durably
//! holds every event before it (start-up replays from a snapshot and could not produce those
//! events again), and then lets journal retention go past the oldest snapshot kept.

use crate::ports::SnapshotPort;
use crate::stages::SnapshotRequest;
use crate::{Metrics, OutputDurability};
use ringmatch_journal::SnapshotInfo;

/// What became of one request.
#[derive(Debug)]
pub enum Written {
    /// The file is written; journal records up to `retain_from_seq` are no longer needed.
    Done {
        /// The snapshot.
        info: SnapshotInfo,
        /// The oldest snapshot kept, plus one.
        retain_from_seq: u64,
    },
    /// The output could not be made durable (its sync failed): no snapshot this time.
    OutputNotDurable(String),
    /// The store failed: no snapshot this time (the journal still holds everything).
    Failed(String),
}

/// The snapshot writer's state.
pub struct SnapshotWriter<P: SnapshotPort> {
    store: P,
    durability: OutputDurability,
}

impl<P: SnapshotPort> SnapshotWriter<P> {
    /// A writer into `store`, for an output made durable as `durability` says.
    pub fn new(store: P, durability: OutputDurability) -> SnapshotWriter<P> {
        SnapshotWriter { store, durability }
    }

    /// Whether the output holds (not yet necessarily durably, for a synced sink) every event
    /// the request waits for, so [`SnapshotWriter::write`] need not wait.
    pub fn ready(&self, request: &SnapshotRequest, metrics: &Metrics) -> bool {
        self.durability.handed_over(metrics) >= request.events_before
    }

    /// Makes the output durable as far as the request needs, then writes the snapshot. Call
    /// it only once [`SnapshotWriter::ready`].
    pub fn write(&mut self, request: &SnapshotRequest) -> Written {
        if let Err(error) = self.durability.sync() {
            return Written::OutputNotDurable(error.to_string());
        }
        match self
            .store
            .write(request.seq, request.last_event, &request.state)
        {
            Ok(info) => {
                let retain_from_seq = match self.store.list() {
                    Ok(kept) => kept.last().map_or(0, |oldest| oldest.seq + 1),
                    Err(_) => 0,
                };
                Written::Done {
                    info,
                    retain_from_seq,
                }
            }
            Err(error) => Written::Failed(error.to_string()),
        }
    }

    /// The store.
    pub fn store(&self) -> &P {
        &self.store
    }
}
