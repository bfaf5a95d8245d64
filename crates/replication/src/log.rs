//! The journal as the Raft log. Journal sequence = Raft index. A record's term is not stored
//! in the record: every term's first entry is the empty entry its leader appends, journaled as
//! a [`CommandType::Term`] record naming the term, and by Raft's log matching every entry up to
//! the next term record has that term. [`LogStore`] keeps those runs in memory (rebuilt from
//! the journal at open), so `term(i)` never reads the disk.
//!
//! Membership is static (the `[cluster]` configuration): a configuration-change entry is
//! refused, never journaled.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState as RaftHardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use ringmatch_journal::{JournalError, JournalRecord};
use ringmatch_pipeline::ports::JournalPort;
use ringmatch_proto::{Command, CommandType, COMMAND_SIZE_BYTES};

use crate::hard_state::{HardState, HardStatePort};
use crate::ReplicationError;

/// The journal as a Raft log: a [`JournalPort`] whose uncommitted tail can be cut, that can
/// restart empty after a snapshot, and whose old records can be dropped.
pub trait LogPort: JournalPort {
    /// Removes every record from `seq` on, durably (a crash never brings them back): a
    /// follower's uncommitted tail that the leader has overridden.
    fn truncate_from(&mut self, seq: u64) -> Result<(), JournalError>;
    /// Removes every record and restarts the log at `next_seq`, durably (a snapshot of the
    /// state after `next_seq - 1` replaces what the log held).
    fn reset_to(&mut self, next_seq: u64) -> Result<(), JournalError>;
    /// Drops records before `seq` where the storage allows (whole segments), removing them
    /// or moving them to `archive`.
    fn retain_from(&mut self, seq: u64, archive: Option<&Path>) -> Result<(), JournalError>;
}

impl LogPort for ringmatch_journal::Journal {
    fn truncate_from(&mut self, seq: u64) -> Result<(), JournalError> {
        ringmatch_journal::Journal::truncate_from(self, seq)
    }

    fn reset_to(&mut self, next_seq: u64) -> Result<(), JournalError> {
        ringmatch_journal::Journal::reset_to(self, next_seq)
    }

    fn retain_from(&mut self, seq: u64, archive: Option<&Path>) -> Result<(), JournalError> {
        ringmatch_journal::Journal::retain_from(self, seq, archive).map(|_| ())
    }
}

/// Where a node finds the snapshot it sends a follower that is behind its log start, and
/// keeps the one its leader sends it. A snapshot travels as the bytes of its file
/// (`docs/snapshot-format.md`).
pub trait SnapshotPort: Send + 'static {
    /// The newest snapshot: the sequence it is the state after, and the file's bytes.
    fn newest(&self) -> Result<Option<(u64, Vec<u8>)>, ReplicationError>;
    /// Checks and stores, durably, a snapshot file of the state after `seq`.
    fn install(&mut self, seq: u64, bytes: &[u8]) -> Result<(), ReplicationError>;
}

impl SnapshotPort for ringmatch_journal::SnapshotStore {
    fn newest(&self) -> Result<Option<(u64, Vec<u8>)>, ReplicationError> {
        let snapshot_error =
            |error: ringmatch_journal::SnapshotError| ReplicationError::Snapshot(error.to_string());
        let Some(info) = self.list().map_err(snapshot_error)?.into_iter().next() else {
            return Ok(None);
        };
        let bytes = self.read_bytes(&info).map_err(snapshot_error)?;
        Ok(Some((info.seq, bytes)))
    }

    fn install(&mut self, seq: u64, bytes: &[u8]) -> Result<(), ReplicationError> {
        ringmatch_journal::SnapshotStore::install(self, seq, bytes)
            .map(|_| ())
            .map_err(|error| ReplicationError::Snapshot(error.to_string()))
    }
}

/// How far the commit index moves before it is stored again without a term or vote change.
pub const COMMIT_STORED_EVERY: u64 = 16_384;

/// Bytes of a normal entry's data: the ingress timestamp, then the 64-byte command.
pub const ENTRY_DATA_SIZE_BYTES: usize = 8 + COMMAND_SIZE_BYTES;

/// The data of the entry that carries `command`.
pub fn entry_data(timestamp_ns: u64, command: &Command) -> Vec<u8> {
    let mut data = Vec::with_capacity(ENTRY_DATA_SIZE_BYTES);
    data.extend_from_slice(&timestamp_ns.to_le_bytes());
    data.extend_from_slice(&command.to_bytes());
    data
}

/// The journal record for entry `entry`, checked.
pub fn record_of(entry: &Entry) -> Result<JournalRecord, ReplicationError> {
    if entry.get_entry_type() != EntryType::EntryNormal {
        return Err(ReplicationError::BadEntry {
            index: entry.index,
            reason: "configuration changes are not supported (membership is static)".into(),
        });
    }
    if entry.data.is_empty() {
        return Ok(JournalRecord {
            seq: entry.index,
            timestamp_ns: 0,
            command: Command::term(entry.term),
        });
    }
    if entry.data.len() != ENTRY_DATA_SIZE_BYTES {
        return Err(ReplicationError::BadEntry {
            index: entry.index,
            reason: format!(
                "{} bytes of data, not {ENTRY_DATA_SIZE_BYTES}",
                entry.data.len()
            ),
        });
    }
    let mut timestamp = [0u8; 8];
    timestamp.copy_from_slice(&entry.data[..8]);
    let command =
        Command::decode(&entry.data[8..]).map_err(|error| ReplicationError::BadEntry {
            index: entry.index,
            reason: error.to_string(),
        })?;
    if command.command_type == CommandType::Term {
        return Err(ReplicationError::BadEntry {
            index: entry.index,
            reason: "a term record inside a normal entry".into(),
        });
    }
    Ok(JournalRecord {
        seq: entry.index,
        timestamp_ns: u64::from_le_bytes(timestamp),
        command,
    })
}

/// The Raft entry for a journal record of term `term`.
fn entry_of(record: &JournalRecord, term: u64) -> Entry {
    let data = match record.command.term_opened() {
        Some(_) => Bytes::new(),
        None => Bytes::from(entry_data(record.timestamp_ns, &record.command)),
    };
    Entry {
        index: record.seq,
        term,
        data,
        ..Entry::default()
    }
}

/// The terms of the log as runs: `(first index, term)`, ascending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TermRuns {
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    /// The term of the entry at `index` (0 before the first term record).
    pub fn term_at(&self, index: u64) -> u64 {
        match self.runs.partition_point(|&(first, _)| first <= index) {
            0 => 0,
            at => self.runs[at - 1].1,
        }
    }

    /// The term of the last run (0 when there is none).
    pub fn last_term(&self) -> u64 {
        self.runs.last().map_or(0, |&(_, term)| term)
    }

    fn open(&mut self, index: u64, term: u64) {
        self.runs.push((index, term));
    }

    fn cut_from(&mut self, index: u64) {
        self.runs.retain(|&(first, _)| first < index);
    }
}

/// The Raft log over the journal, with the hard state beside it: what `raft::RawNode` reads
/// as its storage. The log starts after the hard state's `log_start` (0 for a journal that
/// holds it from index 1): entries up to there are covered by a snapshot, and the journal
/// may still hold some of them (retention drops whole segments).
pub struct LogStore<L: LogPort, H: HardStatePort> {
    log: L,
    hard_state_port: H,
    hard_state: HardState,
    /// The commit index in the stored hard state.
    stored_commit: u64,
    /// See [`crate::NodeConfig::commit_stored_every`].
    commit_stored_every: u64,
    conf_state: ConfState,
    terms: TermRuns,
    snapshots: Option<Box<dyn SnapshotPort>>,
    /// The newest records, up to [`TAIL_CACHED_MAX`]: what a leader sends its followers is
    /// almost always here, so sending does not read the journal.
    tail: VecDeque<JournalRecord>,
}

/// Records the log keeps in memory beside the journal (about 6 MiB).
pub const TAIL_CACHED_MAX: usize = 1 << 16;

impl<L: LogPort, H: HardStatePort> LogStore<L, H> {
    /// The log over `log`, whose records must be a cluster's (a journal written by one node
    /// alone, whose first record is not a term record, is refused), with the hard state of
    /// `hard_state_port`, the static membership `conf_state`, and the snapshots a follower
    /// behind the log start is sent (`None`: never). A snapshot install that a crash
    /// interrupted is finished here.
    pub fn open(
        mut log: L,
        mut hard_state_port: H,
        conf_state: ConfState,
        commit_stored_every: u64,
        snapshots: Option<Box<dyn SnapshotPort>>,
    ) -> Result<LogStore<L, H>, ReplicationError> {
        let mut hard_state = hard_state_port.load()?.unwrap_or_default();
        if hard_state.log_reset_pending {
            log.reset_to(hard_state.log_start + 1)
                .map_err(ReplicationError::Journal)?;
            hard_state.log_reset_pending = false;
            hard_state_port.store(&hard_state)?;
        }
        let first_index = hard_state.log_start + 1;
        if log.first_seq() > first_index || log.next_seq() < first_index {
            return Err(ReplicationError::BadLog(format!(
                "the journal holds sequences {}..{}, but the Raft log starts at {first_index} \
                 (the snapshot before it is of sequence {})",
                log.first_seq(),
                log.next_seq(),
                hard_state.log_start
            )));
        }
        let mut terms = TermRuns::default();
        if hard_state.log_start > 0 {
            terms.open(hard_state.log_start, hard_state.log_start_term);
        }
        for record in log
            .records_from(first_index)
            .map_err(ReplicationError::Journal)?
        {
            let record = record.map_err(ReplicationError::Journal)?;
            match record.command.term_opened() {
                Some(term) if term > terms.last_term() => terms.open(record.seq, term),
                Some(term) => {
                    return Err(ReplicationError::BadLog(format!(
                        "sequence {} opens term {term}, not later than term {}",
                        record.seq,
                        terms.last_term()
                    )))
                }
                None if record.seq == 1 => {
                    return Err(ReplicationError::BadLog(
                        "its first record is not a term record: the journal was written by a \
                         single node, not by a cluster"
                            .into(),
                    ))
                }
                None => {}
            }
        }
        let last_index = log.next_seq() - 1;
        if hard_state.commit > last_index {
            return Err(ReplicationError::BadLog(format!(
                "the stored commit index {} is past the journal's last sequence {last_index}",
                hard_state.commit
            )));
        }
        Ok(LogStore {
            log,
            hard_state_port,
            stored_commit: hard_state.commit,
            commit_stored_every,
            hard_state,
            conf_state,
            terms,
            snapshots,
            tail: VecDeque::new(),
        })
    }

    /// The first index of the Raft log (the journal may hold earlier records).
    pub fn first_index(&self) -> u64 {
        self.hard_state.log_start + 1
    }

    /// Replaces the log with the leader's snapshot of the state after `index` (of `term`):
    /// the snapshot file is stored first, then the hard state says the log starts after
    /// `index` with the journal's reset pending, then the journal restarts empty at
    /// `index + 1`, then the hard state is stored again without the flag. A crash anywhere
    /// leaves a node that opens (the reset is finished at open) and never a log that
    /// disagrees with the leader's.
    pub fn install_snapshot(
        &mut self,
        index: u64,
        term: u64,
        bytes: &[u8],
    ) -> Result<(), ReplicationError> {
        let Some(snapshots) = self.snapshots.as_mut() else {
            return Err(ReplicationError::Unsupported(
                "a snapshot from the leader, on a node without a snapshot store".into(),
            ));
        };
        snapshots.install(index, bytes)?;
        let mut state = HardState {
            commit: self.hard_state.commit.max(index),
            log_start: index,
            log_start_term: term,
            log_reset_pending: true,
            ..self.hard_state
        };
        self.hard_state_port.store(&state)?;
        self.log
            .reset_to(index + 1)
            .map_err(ReplicationError::Journal)?;
        state.log_reset_pending = false;
        self.hard_state_port.store(&state)?;
        self.hard_state = state;
        self.stored_commit = state.commit;
        self.terms = TermRuns::default();
        self.terms.open(index, term);
        self.tail.clear();
        Ok(())
    }

    /// Moves the log start to `index` (a snapshot of the state after it is stored and the
    /// index is committed) and drops the journal's whole segments before it, removing them
    /// or moving them to `archive`. The hard state names the new start before anything is
    /// dropped. Nothing happens for an index at or before the current start.
    pub fn compact(&mut self, index: u64, archive: Option<&Path>) -> Result<(), ReplicationError> {
        if index <= self.hard_state.log_start {
            return Ok(());
        }
        if index > self.hard_state.commit {
            return Err(ReplicationError::BadLog(format!(
                "compaction to {index} past the commit index {}",
                self.hard_state.commit
            )));
        }
        let state = HardState {
            log_start: index,
            log_start_term: self.terms.term_at(index),
            ..self.hard_state
        };
        self.hard_state_port.store(&state)?;
        self.hard_state = state;
        self.stored_commit = state.commit;
        self.log
            .retain_from(index + 1, archive)
            .map_err(ReplicationError::Journal)
    }

    /// The hard state as last stored.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The index of the last entry.
    pub fn last_index(&self) -> u64 {
        self.log.next_seq() - 1
    }

    /// The term runs.
    pub fn terms(&self) -> &TermRuns {
        &self.terms
    }

    /// The journal.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// Appends `entries` (consecutive), first cutting any entries at and after the first one's
    /// index (the tail the leader overrode; never a committed entry). Not yet durable: see
    /// [`LogStore::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), ReplicationError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.last_index() {
            if first.index <= self.hard_state.commit {
                return Err(ReplicationError::BadLog(format!(
                    "an append at index {} would cut committed entries (commit {})",
                    first.index, self.hard_state.commit
                )));
            }
            self.log
                .truncate_from(first.index)
                .map_err(ReplicationError::Journal)?;
            self.terms.cut_from(first.index);
            while self
                .tail
                .back()
                .is_some_and(|record| record.seq >= first.index)
            {
                self.tail.pop_back();
            }
        }
        for entry in entries {
            let record = record_of(entry)?;
            if record.seq != self.log.next_seq() {
                return Err(ReplicationError::BadLog(format!(
                    "entry {} does not follow the journal's last sequence {}",
                    record.seq,
                    self.last_index()
                )));
            }
            match record.command.term_opened() {
                Some(term) if term > self.terms.last_term() => self.terms.open(record.seq, term),
                Some(term) => {
                    return Err(ReplicationError::BadLog(format!(
                        "entry {} opens term {term}, not later than term {}",
                        record.seq,
                        self.terms.last_term()
                    )))
                }
                None if entry.term != self.terms.last_term() => {
                    return Err(ReplicationError::BadLog(format!(
                        "entry {} has term {}, but the term record before it opens term {}",
                        record.seq,
                        entry.term,
                        self.terms.last_term()
                    )))
                }
                None => {}
            }
            self.log
                .append(&record)
                .map_err(ReplicationError::Journal)?;
            if self.tail.len() == TAIL_CACHED_MAX {
                self.tail.pop_front();
            }
            self.tail.push_back(record);
        }
        Ok(())
    }

    /// Makes every appended entry durable.
    pub fn sync(&mut self) -> Result<(), ReplicationError> {
        self.log.commit().map_err(ReplicationError::Journal)
    }

    /// Records a new term or vote: stored durably when either changed (what a node must never
    /// forget), with the commit index known so far. A commit index that comes in the same
    /// Raft step refers to the log after that step's entries: `set_commit` takes it once they
    /// are journaled.
    pub fn set_term_and_vote(&mut self, term: u64, vote: u64) -> Result<(), ReplicationError> {
        if term == self.hard_state.term && vote == self.hard_state.vote {
            return Ok(());
        }
        let next = HardState {
            term,
            vote,
            ..self.hard_state
        };
        self.hard_state_port.store(&next)?;
        self.stored_commit = next.commit;
        self.hard_state = next;
        Ok(())
    }

    /// Notes a new commit index: kept in memory, and stored (synced) once it has moved
    /// `commit_stored_every` past the stored one, so that a restart, which replays the
    /// matcher only up to the stored commit, never has far to go. The entries up to it are
    /// synced already (`process` syncs before it advances).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), ReplicationError> {
        let commit = commit.min(self.last_index());
        if commit >= self.stored_commit + self.commit_stored_every {
            let state = HardState {
                commit,
                ..self.hard_state
            };
            self.hard_state_port.store(&state)?;
            self.stored_commit = commit;
        }
        self.hard_state.commit = commit;
        Ok(())
    }
}

fn storage_error(error: ReplicationError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(error)))
}

impl<L: LogPort, H: HardStatePort> raft::Storage for LogStore<L, H> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let mut hard_state = RaftHardState::default();
        hard_state.term = self.hard_state.term;
        hard_state.vote = self.hard_state.vote;
        hard_state.commit = self.hard_state.commit;
        Ok(RaftState::new(hard_state, self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.log.next_seq() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into();
        let mut entries = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        let records: Box<dyn Iterator<Item = Result<JournalRecord, JournalError>> + '_> =
            match self.tail.front() {
                Some(front) if front.seq <= low => Box::new(
                    self.tail
                        .range((low - front.seq) as usize..)
                        .copied()
                        .map(Ok),
                ),
                _ => self
                    .log
                    .records_from(low)
                    .map_err(|error| storage_error(ReplicationError::Journal(error)))?,
            };
        for record in records.take((high - low) as usize) {
            let record = record.map_err(|error| storage_error(ReplicationError::Journal(error)))?;
            let entry = entry_of(&record, self.terms.term_at(record.seq));
            size += (entry.data.len() + 24) as u64;
            // As raft-rs asks: at least one entry, then as many as fit in `max_size`.
            if !entries.is_empty() && max_size.is_some_and(|max| size > max) {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == 0 {
            return Ok(0);
        }
        if index < self.hard_state.log_start {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.terms.term_at(index))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(LogStore::first_index(self))
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    /// The newest stored snapshot, for a follower behind the log start: it must lie from the
    /// log start (whose term is known) to the commit index, and at or after `request_index`.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        let Some(snapshots) = &self.snapshots else {
            return Err(unavailable);
        };
        let Some((index, bytes)) = snapshots.newest().map_err(storage_error)? else {
            return Err(unavailable);
        };
        if index < self.hard_state.log_start
            || index > self.hard_state.commit
            || index < request_index
        {
            return Err(unavailable);
        }
        let mut snapshot = Snapshot {
            data: Bytes::from(bytes),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = self.terms.term_at(index);
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_runs_answer_for_every_index() {
        let mut runs = TermRuns::default();
        assert_eq!(runs.term_at(5), 0);
        runs.open(1, 1);
        runs.open(4, 3);
        runs.open(9, 4);
        let terms: Vec<u64> = (0..12).map(|index| runs.term_at(index)).collect();
        assert_eq!(terms, [0, 1, 1, 1, 3, 3, 3, 3, 3, 4, 4, 4]);
        runs.cut_from(4);
        assert_eq!(runs.last_term(), 1);
        assert_eq!(runs.term_at(10), 1);
    }

    #[test]
    fn entries_and_records_convert_both_ways() {
        let command = Command::limit(3, 1, ringmatch_proto::Side::Buy, 100, 5);
        let record = JournalRecord {
            seq: 7,
            timestamp_ns: 99,
            command,
        };
        let entry = entry_of(&record, 2);
        assert_eq!((entry.index, entry.term), (7, 2));
        assert_eq!(record_of(&entry).unwrap(), record);
        let term = JournalRecord {
            seq: 8,
            timestamp_ns: 0,
            command: Command::term(3),
        };
        let empty = entry_of(&term, 3);
        assert!(empty.data.is_empty());
        assert_eq!(record_of(&empty).unwrap(), term);
        let mut change = Entry::default();
        change.set_entry_type(EntryType::EntryConfChange);
        assert!(record_of(&change).is_err());
        let mut short = entry.clone();
        short.data = Bytes::from_static(&[1, 2, 3]);
        assert!(record_of(&short).is_err());
        let mut disguised = entry;
        disguised.data = Bytes::from(entry_data(0, &Command::term(9)));
        assert!(record_of(&disguised).is_err());
    }
}
