//! The ports: the small traits through which the stages and the start-up recovery reach the
//! world. The production implementations are the real journal ([`Journal`]), snapshot store
//! ([`SnapshotStore`]) and events file; the simulator (`crates/sim`) implements the same traits
//! over simulated storage whose crashes keep only what was synced, so it can drive the very
//! same stage and recovery code through power losses.
//!
//! What each port promises:
//! - [`JournalPort`]: records are appended in sequence order; after [`JournalPort::commit`]
//!   returns, every record appended before it is as durable as the journal's policy makes it
//!   (synced under `batch` and `every`, in the page cache under `none`). A record the port
//!   returns from [`JournalPort::records_from`] was checked (length, checksum, sequence).
//! - [`SnapshotPort`]: a snapshot is written whole or not at all (a crash never leaves half a
//!   file under a snapshot's name); `list` is newest first; `read` checks everything it returns.
//! - [`crate::OutputSink`] / [`crate::ResumableOutput`]: events are taken in (sequence, index)
//!   order, each once; [`crate::OutputDurability`] says when they are durable.
//! - [`ReplicaLink`]: once `replicated(seq)` returns `Ok(to)`, every command to `to` (at least
//!   `seq`) is on a majority of the cluster's disks.

use std::path::Path;
use std::sync::Arc;

use ringmatch_journal::{
    Journal, JournalError, JournalReader, JournalRecord, JournalStats, Snapshot, SnapshotError,
    SnapshotInfo, SnapshotStore,
};

/// The journal as the Journaler and start-up see it.
pub trait JournalPort: Send + 'static {
    /// Appends one record; its sequence must be the journal's next.
    fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError>;
    /// The end of a batch: makes the records appended so far durable per the policy.
    fn commit(&mut self) -> Result<(), JournalError>;
    /// Whether [`JournalPort::commit`] syncs once per batch (the `batch` policy), so that its
    /// latency is worth measuring.
    fn commits_sync(&self) -> bool;
    /// The first sequence the journal holds.
    fn first_seq(&self) -> u64;
    /// The sequence the next record gets.
    fn next_seq(&self) -> u64;
    /// Every record from `seq` to the end, checked as it is read.
    fn records_from(
        &self,
        seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<JournalRecord, JournalError>> + '_>, JournalError>;
    /// The counters the metrics read.
    fn stats(&self) -> Arc<JournalStats>;
    /// At a clean stop: everything appended is made durable, whatever the policy.
    fn sync_all(&mut self) -> Result<(), JournalError>;
    /// The folder of segment files that retention may remove old segments from; `None` when
    /// no retention may run (a cluster's log must keep its start).
    fn segments_dir(&self) -> Option<&Path>;
}

impl JournalPort for Journal {
    fn append(&mut self, record: &JournalRecord) -> Result<(), JournalError> {
        Journal::append(self, record)
    }

    fn commit(&mut self) -> Result<(), JournalError> {
        Journal::commit(self)
    }

    fn commits_sync(&self) -> bool {
        self.config().durability == ringmatch_journal::Durability::Batch
    }

    fn first_seq(&self) -> u64 {
        Journal::first_seq(self)
    }

    fn next_seq(&self) -> u64 {
        Journal::next_seq(self)
    }

    fn records_from(
        &self,
        seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<JournalRecord, JournalError>> + '_>, JournalError>
    {
        records_before(&self.config().dir, seq, Journal::next_seq(self))
    }

    fn stats(&self) -> Arc<JournalStats> {
        Journal::stats(self)
    }

    fn sync_all(&mut self) -> Result<(), JournalError> {
        Journal::sync(self)
    }

    fn segments_dir(&self) -> Option<&Path> {
        Some(&self.config().dir)
    }
}

/// The records of the journal in `dir` from `seq` up to (not including) `next_seq`, checked
/// as they are read: `records_from` of a port whose journal is a folder of segments.
pub fn records_before(
    dir: &Path,
    seq: u64,
    next_seq: u64,
) -> Result<Box<dyn Iterator<Item = Result<JournalRecord, JournalError>>>, JournalError> {
    let reader = JournalReader::open(dir, seq)?;
    Ok(Box::new(reader.take(next_seq.saturating_sub(seq) as usize)))
}

/// The snapshot store as the snapshot writer and start-up see it.
pub trait SnapshotPort: Send + 'static {
    /// Writes the state after command `seq`, with the position of the last event before it.
    fn write(
        &self,
        seq: u64,
        last_event: Option<(u64, u32)>,
        state: &[u8],
    ) -> Result<SnapshotInfo, SnapshotError>;
    /// The snapshots on disk, newest first.
    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError>;
    /// One snapshot, checked.
    fn read(&self, info: &SnapshotInfo) -> Result<Snapshot, SnapshotError>;
}

impl SnapshotPort for SnapshotStore {
    fn write(
        &self,
        seq: u64,
        last_event: Option<(u64, u32)>,
        state: &[u8],
    ) -> Result<SnapshotInfo, SnapshotError> {
        SnapshotStore::write(self, seq, last_event, state)
    }

    fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        SnapshotStore::list(self)
    }

    fn read(&self, info: &SnapshotInfo) -> Result<Snapshot, SnapshotError> {
        SnapshotStore::read(self, info)
    }
}

/// A cluster leader's link to the other members: what the Matcher's thread waits on before it
/// runs a command.
pub trait ReplicaLink: Send + 'static {
    /// Blocks until every command up to `seq` is replicated under the cluster's rule (on a
    /// majority of members' disks), and returns the highest sequence known replicated then
    /// (at least `seq`); an error when `seq` never will be from here (this member stopped
    /// leading).
    fn replicated(&mut self, seq: u64) -> Result<u64, String>;
}
